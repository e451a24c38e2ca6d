// String helpers.
#include "core/core.h"

#include <stdlib.h>

// Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent transpositions
// ("rnak" -> "rank" is 1), so typos suggest the key the user meant.
size_t str_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), w = lb + 1;
    size_t *d = xmalloc((la + 1) * w * sizeof *d);
    for (size_t i = 0; i <= la; i++) d[i * w] = i;
    for (size_t j = 0; j <= lb; j++) d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[(i - 1) * w + j - 1] + (a[i - 1] != b[j - 1]);
            if (d[(i - 1) * w + j] + 1 < best) best = d[(i - 1) * w + j] + 1;
            if (d[i * w + j - 1] + 1 < best) best = d[i * w + j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[(i - 2) * w + j - 2] + 1 < best)
                best = d[(i - 2) * w + j - 2] + 1;
            d[i * w + j] = best;
        }
    }
    size_t r = d[la * w + lb];
    free(d);
    return r;
}

// HF cache resolution: "org/name" (or a legacy "name") -> the snapshot directory of the local
// Hugging Face hub cache, laid out as huggingface_hub lays it out:
//   CACHE/models--org--name/refs/<revision>          a file holding the commit hash
//   CACHE/models--org--name/snapshots/<hash>/...     files that are symlinks to ../../blobs/<sha>
// (datasets--org--name for datasets). CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else
// $HOME/.cache/huggingface/hub. A revision that is itself a hex commit hash names snapshots/<hash>
// directly. An existing path passes through unchanged. Nothing here touches the network: when the
// snapshot is not there, the one error message lists every place looked and the download command.
#include "core/core.h"

#include <ctype.h>
#include <stdlib.h>

static int is_hex_hash(const char *s) {
    size_t n = strlen(s);
    if (n != 40 && n != 64) return 0; // sha1 commit ids (40), sha256 should the hub move to it (64)
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

// A hub repo id: "name" or "org/name", each part of [A-Za-z0-9._-], not "." or "..".
static int repo_id_ok(const char *s) {
    int parts = 1;
    size_t len = 0;
    for (const char *p = s;; p++) {
        if (*p == '/' || !*p) {
            if (len == 0 || (len == 1 && p[-1] == '.') || (len == 2 && p[-1] == '.' && p[-2] == '.')) return 0;
            if (!*p) break;
            parts++;
            len = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && !strchr("._-", *p)) return 0;
        len++;
    }
    return parts <= 2;
}

// A revision: a branch/tag name or hash; kept inside refs/ (no absolute path, no ".." component).
static int revision_ok(const char *s) {
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p)) return 0;
        if (p[0] == '.' && p[1] == '.' && (p == s || p[-1] == '/') && (p[2] == '/' || !p[2])) return 0;
    }
    return 1;
}

// The cache directory and a phrase saying which it is (both xmalloc'ed); NULL when HOME is unset
// too.
static char *cache_dir(char **origin) {
    const char *e = getenv("HF_HUB_CACHE");
    if (e && *e) {
        *origin = xstrdup("HF cache from $HF_HUB_CACHE");
        return xstrdup(e);
    }
    e = getenv("HF_HOME");
    if (e && *e) {
        *origin = xstrdup("HF cache from $HF_HOME/hub");
        return fs_join(e, "hub");
    }
    e = getenv("HOME");
    if (e && *e) {
        *origin = xstrdup("the default HF cache; set HF_HUB_CACHE or HF_HOME if yours is elsewhere");
        return fs_join(e, ".cache/huggingface/hub");
    }
    *origin = xstrdup("HF_HUB_CACHE, HF_HOME and HOME are all unset");
    return NULL;
}

static gt_status copy_out(const char *what, const char *path, char *out, size_t out_size, gt_error *err) {
    size_t n = strlen(path);
    if (n + 1 > out_size)
        return gt_fail(err, GT_EINVAL, "%s: resolved path %s is longer than %zu bytes", what, path, out_size - 1);
    memcpy(out, path, n + 1);
    return GT_OK;
}

// Reads refs/<rev>: the commit hash, surrounding whitespace stripped. Returns NULL (and *bad = 1 when
// the file exists but does not hold a hash).
static char *read_ref(const char *ref_path, int *bad) {
    char *text;
    *bad = 0;
    if (fs_read_file(ref_path, &text, NULL, NULL) != GT_OK) return NULL;
    char *b = text, *e = text + strlen(text);
    while (*b && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    *e = 0;
    if (!is_hex_hash(b)) {
        *bad = 1;
        free(text);
        return NULL;
    }
    char *hash = xstrdup(b);
    free(text);
    return hash;
}

gt_status hfcache_resolve(const char *name_or_path, hf_repo_kind kind, const char *revision, char *out,
                          size_t out_size, gt_error *err) {
    const char *what = kind == HF_DATASET ? "dataset" : "model";
    if (fs_exists(name_or_path)) return copy_out(name_or_path, name_or_path, out, out_size, err);
    if (!repo_id_ok(name_or_path))
        return gt_fail(err, GT_ENOTFOUND, "%s: no such file or directory (and not a hub %s id like org/name)",
                       name_or_path, what);
    const char *rev = revision ? revision : "main";
    if (!revision_ok(rev))
        return gt_fail(err, GT_EINVAL, "%s: revision '%s' is not a branch, tag or commit hash", name_or_path, rev);

    char *origin, *cache = cache_dir(&origin);
    int pinned = strcmp(rev, "main") != 0; // the download command's default revision is main
    char *fix = xasprintf("huggingface-cli download %s%s%s%s", name_or_path,
                          kind == HF_DATASET ? " --repo-type dataset" : "", pinned ? " --revision " : "",
                          pinned ? rev : "");
    char *looked = NULL; // what was missing in the cache, for the message
    char *repo = NULL, *snap = NULL, *ref = NULL, *hash = NULL;
    gt_status s = GT_ENOTFOUND;
    if (!cache) {
        looked = xasprintf("no HF cache directory (%s)", origin);
        goto done;
    }
    const char *slash = strchr(name_or_path, '/'); // "org/name" -> "models--org--name"
    char *dir_name = slash ? xasprintf("%s--%.*s--%s", kind == HF_DATASET ? "datasets" : "models",
                                       (int)(slash - name_or_path), name_or_path, slash + 1)
                           : xasprintf("%s--%s", kind == HF_DATASET ? "datasets" : "models", name_or_path);
    repo = fs_join(cache, dir_name);
    free(dir_name);
    if (!fs_is_dir(repo)) {
        looked = xasprintf("%s (no such directory; %s)", repo, origin);
        goto done;
    }
    if (is_hex_hash(rev)) {
        hash = xstrdup(rev);
    } else {
        char *refs = fs_join(repo, "refs");
        ref = fs_join(refs, rev);
        free(refs);
        int bad;
        hash = read_ref(ref, &bad);
        if (!hash) {
            if (bad) {
                s = gt_fail(err, GT_EFORMAT, "%s: %s does not hold a commit hash; the cache entry is damaged, fix: %s",
                            name_or_path, ref, fix);
                goto done;
            }
            looked = xasprintf("%s (no such file: revision '%s' not downloaded; %s)", ref, rev, origin);
            goto done;
        }
    }
    char *snaps = fs_join(repo, "snapshots");
    snap = fs_join(snaps, hash);
    free(snaps);
    if (!fs_is_dir(snap)) {
        looked = ref ? xasprintf("%s -> %s (no such directory; %s)", ref, snap, origin)
                     : xasprintf("%s (no such directory; %s)", snap, origin);
        goto done;
    }
    s = copy_out(name_or_path, snap, out, out_size, err);
done:
    if (looked)
        s = gt_fail(err, GT_ENOTFOUND,
                    "%s %s not found. Looked for:\n"
                    "  - a local path '%s': no such file or directory\n"
                    "  - the hub cache entry %s\n"
                    "Fix: %s (or pass the path of a local copy)",
                    what, name_or_path, name_or_path, looked, fix);
    free(looked);
    free(hash);
    free(ref);
    free(snap);
    free(repo);
    free(fix);
    free(cache);
    free(origin);
    return s;
}

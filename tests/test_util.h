// tests/test_util.h: the harness shared by the tests/test_*.c programs. Each test file is its own
// executable (tests/CMakeLists.txt), so everything here is a macro or static inline.
//   EXPECT(cond, fmt, ...)  counts a failure and says where, which condition and why; the test goes on
//   test_report(ok, ...)    a line for every check, "ok   ..." or "FAIL ...", counting the FAILs
//   test_tmpdir(name)       $GPTOSS_TMP/name, created (ctest sets GPTOSS_TMP; by hand: /tmp/gptoss-test)
//   test_src_path(rel)      $GPTOSS_SRC/rel (by hand: rel, from the repository root)
//   test_write_file(...)    a file the test needs, written or the test dies
//   test_finish(name)       the last line and the exit status: 1 after any failure, else 0
// Setup that cannot go on (a fixture that does not load) dies with gt_die/CHECK; checks use EXPECT.
#ifndef GPTOSS_TEST_UTIL_H
#define GPTOSS_TEST_UTIL_H

#include <stdarg.h>
#include <stdlib.h>

#include "core/core.h"

static int failures; // EXPECTs that failed

// stdout is flushed first so that a failure stands after the lines the test printed before it.
#define EXPECT(cond, ...)                                                                             \
    do {                                                                                              \
        if (!(cond)) {                                                                                \
            failures++;                                                                               \
            fflush(stdout);                                                                           \
            fprintf(stderr, "%s:%d: FAIL (%s): ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                             \
            fputc('\n', stderr);                                                                      \
        }                                                                                             \
    } while (0)

// One check's line on stdout: "ok   " or "FAIL " then the message; a FAIL counts as a failure.
__attribute__((format(printf, 2, 3))) static inline void test_report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(ok ? "ok   " : "FAIL ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    failures += !ok;
}

// A directory of this test under $GPTOSS_TMP, created; the caller frees it.
static inline char *test_tmpdir(const char *name) {
    const char *t = getenv("GPTOSS_TMP");
    char *dir = fs_join(t && *t ? t : "/tmp/gptoss-test", name);
    gt_error err;
    if (fs_mkdirs(dir, &err) != GT_OK) gt_die(__FILE__, __LINE__, "test setup: %s", err.msg);
    return dir;
}

// A file of the source tree; the caller frees it.
static inline char *test_src_path(const char *rel) {
    const char *src = getenv("GPTOSS_SRC");
    return fs_join(src && *src ? src : ".", rel);
}

// path = data[0..len), atomically; dies if it cannot be written.
static inline void test_write_file(const char *path, const void *data, size_t len) {
    gt_error err;
    if (fs_write_atomic(path, data, len, &err) != GT_OK) gt_die(__FILE__, __LINE__, "test setup: %s", err.msg);
}

static inline int test_finish(const char *name) {
    if (failures) {
        fflush(stdout);
        fprintf(stderr, "%s: %d failure(s)\n", name, failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif

// Errors (user-facing gt_error messages), fatal checks, checked allocation and logging.
#include "core/core.h"

#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>

gt_status gt_fail(gt_error *err, gt_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

gt_status gt_wrap(gt_error *err, const char *fmt, ...) {
    char prefix[1024], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->status;
}

const char *gt_status_name(gt_status st) {
    switch (st) {
    case GT_OK: return "ok";
    case GT_EINVAL: return "invalid value";
    case GT_EIO: return "i/o error";
    case GT_ENOTFOUND: return "not found";
    case GT_EFORMAT: return "malformed file";
    case GT_EUNSUPPORTED: return "unsupported";
    case GT_ENOMEM: return "out of memory";
    }
    return "unknown";
}

_Noreturn void gt_die(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "gptoss: fatal: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) gt_die(__FILE__, __LINE__, "out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) gt_die(__FILE__, __LINE__, "out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) gt_die(__FILE__, __LINE__, "out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xasprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(n >= 0);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

static log_level log_threshold(void) {
    static int level = -1;
    if (level < 0) {
        const char *e = getenv("GPTOSS_LOG");
        level = LOG_INFO;
        if (e && !strcasecmp(e, "debug")) level = LOG_DEBUG;
        else if (e && !strcasecmp(e, "warn")) level = LOG_WARN;
        else if (e && !strcasecmp(e, "error")) level = LOG_ERROR;
    }
    return (log_level)level;
}

void log_msg(log_level lvl, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warning", "error"};
    if (lvl < log_threshold()) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gptoss: %s: ", names[lvl]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

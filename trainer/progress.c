// trainer/progress.c: what a running train shows. On a terminal a one-line bar redrawn in place on
// stderr ("\r" + erase line); otherwise (a pipe, a file, CI) one plain line every `every` steps, so logs
// stay readable. Every plain line and message also goes to train.log with a timestamp.
//
// Invariant: a message printed while a bar is on screen first erases the bar line, so messages never
// share a line with it; the next progress_step draws the bar again.
#include "trainer/trainer.h"

#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t progress_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int ok = fscanf(f, "%llu %llu", &size, &resident) == 2;
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return ok && page > 0 ? (size_t)(resident * (unsigned long long)page) : 0;
}

void progress_init(progress *p, int bar, int every, int64_t total, int64_t start, FILE *log) {
    memset(p, 0, sizeof *p);
    p->bar = bar;
    p->every = every > 0 ? every : 1;
    p->total = total;
    p->start = start;
    p->t_start = progress_now();
    p->log = log;
}

static void fmt_duration(char *buf, size_t size, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, size, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

static void log_line(FILE *log, const char *line) {
    if (!log) return;
    time_t now = time(NULL);
    struct tm tm;
    char ts[32];
    localtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(log, "%s %s\n", ts, line);
    fflush(log);
}

static void clear_bar(progress *p) {
    if (p->drawn) fputs("\r\033[K", stderr);
    p->drawn = 0;
}

void progress_step(progress *p, const progress_info *in) {
    double el = progress_now() - p->t_start;
    int64_t done = in->step - p->start, left = p->total - in->step;
    char eta[32], line[512];
    fmt_duration(eta, sizeof eta, done > 0 ? el / (double)done * (double)left : -1);
    double rss = (double)progress_rss_bytes() / 1048576.0;
    int pct = p->total > 0 ? (int)(100 * in->step / p->total) : 100;
    snprintf(line, sizeof line, "step %lld/%lld loss %.4f lr %.3g grad_norm %.3g tok/s %.0f ETA %s RSS %.0f MiB",
             (long long)in->step, (long long)p->total, in->loss, in->lr, in->grad_norm, in->tokens_per_s, eta, rss);
    if (p->bar) {
        enum { W = 24 };
        char bar[W + 1];
        int fill = pct * W / 100;
        for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
        bar[W] = 0;
        fprintf(stderr, "\r\033[K[%s] %3d%% %s", bar, pct, line);
        fflush(stderr);
        p->drawn = 1;
    }
    if (in->step % p->every == 0 || in->step == p->total) {
        if (!p->bar) {
            fprintf(stderr, "%s\n", line);
            fflush(stderr);
        }
        log_line(p->log, line);
    }
}

void progress_printf(progress *p, const char *fmt, ...) {
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    clear_bar(p);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    log_line(p->log, line);
}

void progress_end(progress *p) {
    if (p->drawn) fputc('\n', stderr);
    p->drawn = 0;
}

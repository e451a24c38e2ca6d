// trainer/metrics.c: runs/NAME/metrics.jsonl (one JSON object per step, per skipped step and per
// evaluation, written with jansson and flushed line by line) and loss.svg (train and validation loss
// against the optimizer step, written by the small SVG writer below).
//
// Invariants: metrics.jsonl only ever holds complete lines for steps up to the run's progress; on resume
// the lines after the checkpoint's step are dropped (those steps run again and log again), so a resumed
// run's file equals a straight run's apart from the timings. Losses are written with 17 significant
// digits, so they read back bit for bit.
#include "trainer/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

static void curve_push(int64_t **steps, double **vals, size_t *n, size_t *cap, int64_t step, double v) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *steps = xrealloc(*steps, *cap * sizeof **steps);
        *vals = xrealloc(*vals, *cap * sizeof **vals);
    }
    (*steps)[*n] = step;
    (*vals)[*n] = v;
    (*n)++;
}

// Adds a parsed line's point to the curves (train and eval lines; skip lines have none).
static void curves_add(train_metrics *m, json_t *o) {
    const char *type = json_string_value(json_object_get(o, "type"));
    int64_t step = (int64_t)json_integer_value(json_object_get(o, "step"));
    if (type && !strcmp(type, "train"))
        curve_push(&m->steps, &m->loss, &m->n, &m->cap, step, json_number_value(json_object_get(o, "loss")));
    else if (type && !strcmp(type, "eval"))
        curve_push(&m->eval_steps, &m->eval_loss, &m->n_eval, &m->cap_eval, step,
                   json_number_value(json_object_get(o, "val_loss")));
}

// Keeps the lines of steps <= keep_until: rewrites the file atomically when it drops any.
static gt_status reload(train_metrics *m, int64_t keep_until, gt_error *err) {
    char *data;
    size_t len;
    if (!fs_exists(m->path)) return GT_OK;
    gt_status st = fs_read_file(m->path, &data, &len, err);
    if (st) return st;
    char *kept = xmalloc(len + 1);
    size_t nk = 0, lineno = 0;
    int dropped = 0;
    for (char *line = data, *next; line < data + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        next = nl ? nl + 1 : data + len;
        lineno++;
        if (!nl) { // a line cut by a crash
            log_warn("%s:%zu: incomplete last line dropped", m->path, lineno);
            dropped = 1;
            break;
        }
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &je);
        json_t *js = o ? json_object_get(o, "step") : NULL;
        if (!json_is_integer(js)) {
            log_warn("%s:%zu: not a metrics line, dropped", m->path, lineno);
            dropped = 1;
        } else if (json_integer_value(js) > keep_until) {
            dropped = 1;
        } else {
            curves_add(m, o);
            memcpy(kept + nk, line, (size_t)(next - line));
            nk += (size_t)(next - line);
        }
        json_decref(o);
    }
    if (dropped) st = fs_write_atomic(m->path, kept, nk, err);
    free(kept);
    free(data);
    return st;
}

gt_status metrics_open(train_metrics *m, const char *run_dir, int64_t keep_until, gt_error *err) {
    memset(m, 0, sizeof *m);
    m->path = fs_join(run_dir, "metrics.jsonl");
    m->svg_path = fs_join(run_dir, "loss.svg");
    gt_status st = keep_until >= 0 ? reload(m, keep_until, err) : GT_OK;
    if (st) return st;
    m->f = fopen(m->path, keep_until >= 0 ? "a" : "w");
    if (!m->f) return gt_fail(err, GT_EIO, "%s: cannot open for writing: %s", m->path, strerror(errno));
    return GT_OK;
}

static gt_status write_line(train_metrics *m, json_t *o, gt_error *err) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    CHECK(s);
    int bad = fprintf(m->f, "%s\n", s) < 0 || fflush(m->f) != 0;
    free(s);
    curves_add(m, o);
    json_decref(o);
    if (bad) return gt_fail(err, GT_EIO, "%s: write failed: %s (disk full?)", m->path, strerror(errno));
    return GT_OK;
}

// jansson refuses NaN and Inf reals; they are written as null (a skipped step has no loss).
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

gt_status metrics_log_step(train_metrics *m, const metrics_step *s, gt_error *err) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("train"));
    json_object_set_new(o, "step", json_integer(s->step));
    json_object_set_new(o, "epoch", json_integer((json_int_t)s->epoch));
    json_object_set_new(o, "loss", num(s->loss));
    json_object_set_new(o, "lr", num(s->lr));
    json_object_set_new(o, "grad_norm", num(s->grad_norm));
    json_object_set_new(o, "tokens", json_integer((json_int_t)s->tokens));
    json_object_set_new(o, "tokens_per_s", num(s->tokens_per_s));
    json_object_set_new(o, "time_s", num(s->time_s));
    return write_line(m, o, err);
}

gt_status metrics_log_skip(train_metrics *m, int64_t step, const char *reason, gt_error *err) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("skip"));
    json_object_set_new(o, "step", json_integer(step));
    json_object_set_new(o, "reason", json_string(reason));
    return write_line(m, o, err);
}

gt_status metrics_log_eval(train_metrics *m, int64_t step, double val_loss, uint64_t val_tokens, gt_error *err) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("eval"));
    json_object_set_new(o, "step", json_integer(step));
    json_object_set_new(o, "val_loss", num(val_loss));
    json_object_set_new(o, "val_tokens", json_integer((json_int_t)val_tokens));
    return write_line(m, o, err);
}

void metrics_close(train_metrics *m) {
    if (m->f) fclose(m->f);
    free(m->path);
    free(m->svg_path);
    free(m->steps);
    free(m->loss);
    free(m->eval_steps);
    free(m->eval_loss);
    memset(m, 0, sizeof *m);
}

gt_status metrics_plot(const train_metrics *m, const char *title, int64_t total_steps, gt_error *err) {
    int64_t x_max = total_steps;
    if (m->n && m->steps[m->n - 1] > x_max) x_max = m->steps[m->n - 1];
    char *svg = loss_plot_svg(title, m->steps, m->loss, m->n, m->eval_steps, m->eval_loss, m->n_eval, x_max);
    gt_status st = fs_write_atomic(m->svg_path, svg, strlen(svg), err);
    free(svg);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// SVG
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        CHECK(k >= 0);
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = 2 * b->cap + (size_t)k + 1;
        b->p = xrealloc(b->p, b->cap);
    }
}

// Text with &, <, > escaped (the title holds the run name).
static void sb_text(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '&') sb_printf(b, "&amp;");
        else if (*s == '<') sb_printf(b, "&lt;");
        else if (*s == '>') sb_printf(b, "&gt;");
        else sb_printf(b, "%c", *s);
    }
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` intervals over span.
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

enum { SVG_W = 720, SVG_H = 420, ML = 70, MR = 20, MT = 40, MB = 55 };

static void polyline(sbuf *b, const int64_t *xs, const double *ys, size_t n, double x_max, double y0, double y1,
                     const char *color, int dots) {
    const double pw = SVG_W - ML - MR, ph = SVG_H - MT - MB;
    sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", color);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ys[i])) continue;
        sb_printf(b, "%.1f,%.1f ", ML + pw * (double)xs[i] / x_max, MT + ph * (y1 - ys[i]) / (y1 - y0));
    }
    sb_printf(b, "\"/>\n");
    for (size_t i = 0; dots && i < n; i++) {
        if (!isfinite(ys[i])) continue;
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", ML + pw * (double)xs[i] / x_max,
                  MT + ph * (y1 - ys[i]) / (y1 - y0), color);
    }
}

char *loss_plot_svg(const char *title, const int64_t *steps, const double *loss, size_t n, const int64_t *eval_steps,
                    const double *eval_loss, size_t n_eval, int64_t x_max) {
    sbuf b = {xmalloc(4096), 0, 4096};
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(loss[i])) lo = fmin(lo, loss[i]), hi = fmax(hi, loss[i]);
    for (size_t i = 0; i < n_eval; i++)
        if (isfinite(eval_loss[i])) lo = fmin(lo, eval_loss[i]), hi = fmax(hi, eval_loss[i]);
    if (!(lo <= hi)) lo = 0, hi = 1;    // no points yet
    if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
    double ystep = nice_step(hi - lo, 6), y0 = floor(lo / ystep) * ystep, y1 = ceil(hi / ystep) * ystep;
    double xm = x_max > 0 ? (double)x_max : 1, xstep = nice_step(xm, 8);
    const double pw = SVG_W - ML - MR, ph = SVG_H - MT - MB;

    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"sans-serif\" font-size=\"12\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
    sb_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"24\" font-size=\"15\">",
              ML);
    sb_text(&b, title);
    sb_printf(&b, "</text>\n");
    for (double y = y0; y <= y1 + ystep * 1e-6; y += ystep) { // horizontal grid and y labels
        double py = MT + ph * (y1 - y) / (y1 - y0);
        sb_printf(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ML, py, SVG_W - MR, py);
        sb_printf(&b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", ML - 6, py + 4, y);
    }
    for (double x = 0; x <= xm + xstep * 1e-6; x += xstep) { // vertical ticks and x labels
        double px = ML + pw * x / xm;
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", px, MT, px, SVG_H - MB);
        sb_printf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", px, SVG_H - MB + 16, x);
    }
    sb_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", ML, MT,
              pw, ph);
    sb_printf(&b, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">optimizer step</text>\n", ML + pw / 2, SVG_H - 12);
    sb_printf(&b, "<text transform=\"translate(16 %.0f) rotate(-90)\" text-anchor=\"middle\">loss (mean cross-entropy "
                  "per target token, nats)</text>\n", MT + ph / 2);
    polyline(&b, steps, loss, n, xm, y0, y1, "#1f77b4", 0);
    polyline(&b, eval_steps, eval_loss, n_eval, xm, y0, y1, "#ff7f0e", 1);
    sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
                  "<text x=\"%d\" y=\"%d\">train</text>\n", SVG_W - MR - 170, MT + 16, SVG_W - MR - 145, MT + 16,
              SVG_W - MR - 140, MT + 20);
    sb_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"#ff7f0e\"/><text x=\"%d\" y=\"%d\">validation</text>\n",
              SVG_W - MR - 90, MT + 16, SVG_W - MR - 80, MT + 20);
    sb_printf(&b, "</svg>\n");
    return b.p;
}

// trainer/checkpoint.c: checkpoints/step-N/ (adapter in PEFT's format, state.bin, COMPLETE), the
// newest complete one for --resume, keep-last-K, and clearing a run directory for --overwrite.
//
// Crash safety: a checkpoint is built in step-N.tmp/ (each file written by fs_write_atomic or
// safetensors_write: temporary name, fsync, rename), the directory fsynced, renamed to step-N, the
// parent fsynced, and only then COMPLETE is written (atomically). Readers take only directories with a
// COMPLETE whose sizes and CRC-32s match the files, so a crash or a full disk at any point leaves every
// earlier complete checkpoint usable. Old checkpoints are deleted only after the new one is complete.
//
// state.bin (little-endian, the only byte order gptoss runs on):
//   0  char[8] magic "GPTOSSCK"       8  u32 version (1)       12 u32 header bytes (128)
//   16 u64 file bytes                 24 u32 CRC-32 of bytes [32, file bytes)      28 u32 0
//   32 i64 step   40 u64 epoch   48 u64 index   56 u64 data_seed   64 u64 init_seed   72 u64 n_train_rows
//   80 u64 tokens_seen   88 i64 skipped   96 i64 last_eval_step   104 u64 n_params   112 u64 optimizer bytes
//   120 f64 train_seconds
//   128 f32 params[n_params] (the adapter arena as is), then the optimizer state (optim_serialize)
#include "trainer/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define STATE_MAGIC "GPTOSSCK"
#define STATE_VERSION 1u
#define STATE_HEADER 128u
#define MANIFEST_FORMAT "gptoss-checkpoint"
#define MANIFEST_VERSION 1

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put_f64(uint8_t *p, double v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static double get_f64(const uint8_t *p) { double v; memcpy(&v, p, 8); return v; }

static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n) { return (uint32_t)crc32_z(crc, p, n); }

// ---------------------------------------------------------------------------------------------------
// Directory helpers

// Removes a directory holding only files (what a checkpoint or an adapter directory holds).
static gt_status rm_flat_dir(const char *dir, gt_error *err) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? GT_OK : gt_fail(err, GT_EIO, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    gt_status st = GT_OK;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = fs_join(dir, e->d_name);
        if (unlink(p) != 0 && !st)
            st = gt_fail(err, GT_EIO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    if (!st && rmdir(dir) != 0) st = gt_fail(err, GT_EIO, "%s: cannot remove: %s", dir, strerror(errno));
    return st;
}

// "step-00000012" -> 12; -1 for any other name (step-N.tmp included).
static int64_t step_of_name(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *s = name + 5;
    if (!*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > INT64_MAX / 10 - 9) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

typedef struct ckpt_entry {
    int64_t step;
    int complete;
    char *path;
} ckpt_entry;

static int cmp_entry(const void *a, const void *b) {
    int64_t x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
    return x < y ? -1 : x > y;
}

// Every step-N directory of run_dir/checkpoints, sorted by step.
static int list_ckpts(const char *run_dir, ckpt_entry **out) {
    char *cdir = fs_join(run_dir, "checkpoints");
    DIR *d = opendir(cdir);
    int n = 0;
    *out = NULL;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            int64_t s = step_of_name(e->d_name);
            if (s < 0) continue;
            char *p = fs_join(cdir, e->d_name);
            if (!fs_is_dir(p)) {
                free(p);
                continue;
            }
            char *marker = fs_join(p, "COMPLETE");
            *out = xrealloc(*out, (size_t)(n + 1) * sizeof **out);
            (*out)[n++] = (ckpt_entry){s, fs_exists(marker), p};
            free(marker);
        }
        closedir(d);
    }
    free(cdir);
    if (n) qsort(*out, (size_t)n, sizeof **out, cmp_entry);
    return n;
}

static void free_entries(ckpt_entry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].path);
    free(e);
}

gt_status ckpt_find_latest(const char *run_dir, char *path, size_t path_size, int64_t *step, gt_error *err) {
    ckpt_entry *e;
    int n = list_ckpts(run_dir, &e), best = -1;
    for (int i = 0; i < n; i++)
        if (e[i].complete) best = i;
    gt_status st = GT_OK;
    if (best < 0) {
        st = gt_fail(err, GT_ENOTFOUND, "%s/checkpoints: no complete checkpoint (%d unfinished)", run_dir, n);
    } else {
        snprintf(path, path_size, "%s", e[best].path);
        *step = e[best].step;
    }
    free_entries(e, n);
    return st;
}

// Unfinished checkpoints, then all but the newest keep_last complete ones.
static gt_status prune(const char *run_dir, int keep_last, gt_error *err) {
    ckpt_entry *e;
    int n = list_ckpts(run_dir, &e), n_complete = 0;
    for (int i = 0; i < n; i++) n_complete += e[i].complete;
    gt_status st = GT_OK;
    for (int i = 0; i < n && !st; i++) {
        if (e[i].complete && (keep_last == 0 || n_complete <= keep_last)) continue;
        if (e[i].complete) n_complete--;
        // COMPLETE goes first: a checkpoint half deleted by a crash is then unfinished, never "complete".
        char *marker = fs_join(e[i].path, "COMPLETE");
        if (unlink(marker) != 0 && errno != ENOENT)
            st = gt_fail(err, GT_EIO, "%s: cannot remove: %s", marker, strerror(errno));
        free(marker);
        if (!st) st = rm_flat_dir(e[i].path, err);
    }
    free_entries(e, n);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Manifest

static gt_status file_crc(const char *path, uint64_t *size, uint32_t *crc, gt_error *err) {
    char *data;
    size_t len;
    gt_status st = fs_read_file(path, &data, &len, err);
    if (st) return st;
    *size = len;
    *crc = crc_bytes(0, data, len);
    free(data);
    return GT_OK;
}

static const char *const CKPT_FILES[] = {"state.bin", "adapter_model.safetensors", "adapter_config.json"};
enum { N_CKPT_FILES = sizeof CKPT_FILES / sizeof CKPT_FILES[0] };

static gt_status manifest_write(const char *dir, int64_t step, gt_error *err) {
    json_t *root = json_object(), *files = json_array();
    json_object_set_new(root, "format", json_string(MANIFEST_FORMAT));
    json_object_set_new(root, "version", json_integer(MANIFEST_VERSION));
    json_object_set_new(root, "step", json_integer(step));
    gt_status st = GT_OK;
    for (int i = 0; i < N_CKPT_FILES && !st; i++) {
        char *p = fs_join(dir, CKPT_FILES[i]);
        uint64_t size;
        uint32_t crc;
        st = file_crc(p, &size, &crc, err);
        free(p);
        if (st) break;
        json_t *f = json_object();
        json_object_set_new(f, "name", json_string(CKPT_FILES[i]));
        json_object_set_new(f, "bytes", json_integer((json_int_t)size));
        json_object_set_new(f, "crc32", json_integer(crc));
        json_array_append_new(files, f);
    }
    json_object_set_new(root, "files", files);
    if (!st) {
        char *text = json_dumps(root, JSON_INDENT(2));
        CHECK(text);
        char *p = fs_join(dir, "COMPLETE");
        char *withnl = xasprintf("%s\n", text);
        st = fs_write_atomic(p, withnl, strlen(withnl), err);
        free(withnl);
        free(p);
        free(text);
    }
    json_decref(root);
    return st;
}

static gt_status manifest_check(const char *dir, gt_error *err) {
    char *p = fs_join(dir, "COMPLETE");
    json_error_t je;
    json_t *root = json_load_file(p, 0, &je);
    gt_status st = GT_OK;
    const char *bad = NULL;
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!root) bad = je.text;
    else if (!json_is_string(json_object_get(root, "format")) ||
             strcmp(json_string_value(json_object_get(root, "format")), MANIFEST_FORMAT))
        bad = "\"format\" is not \"" MANIFEST_FORMAT "\"";
    else if (json_integer_value(json_object_get(root, "version")) != MANIFEST_VERSION)
        bad = "unknown \"version\" (written by another gptoss version?)";
    else if (!json_is_array(files) || json_array_size(files) != N_CKPT_FILES)
        bad = "\"files\" is not the list of the checkpoint's files";
    if (bad) st = gt_fail(err, GT_EFORMAT, "%s: %s", p, bad);
    for (size_t i = 0; !st && i < json_array_size(files); i++) {
        json_t *f = json_array_get(files, i);
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!name || strchr(name, '/')) {
            st = gt_fail(err, GT_EFORMAT, "%s: files[%zu]: no valid \"name\"", p, i);
            break;
        }
        char *fp = fs_join(dir, name);
        uint64_t size = 0;
        uint32_t crc = 0;
        st = file_crc(fp, &size, &crc, err);
        if (!st && (size != (uint64_t)json_integer_value(json_object_get(f, "bytes")) ||
                    crc != (uint32_t)json_integer_value(json_object_get(f, "crc32"))))
            st = gt_fail(err, GT_EFORMAT, "%s: %s (%llu bytes, CRC-32 %08x) is not what the manifest records: the "
                         "checkpoint is damaged", p, fp, (unsigned long long)size, crc);
        free(fp);
    }
    json_decref(root);
    free(p);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// state.bin

static gt_status state_write(const char *path, const ckpt_state *s, const lora_adapter *la, const optim *opt,
                             gt_error *err) {
    uint8_t h[STATE_HEADER] = {0};
    size_t ob = optim_serialized_size(opt), pb = la->n_params * sizeof(float);
    uint8_t *blob = xmalloc(ob ? ob : 1);
    optim_serialize(opt, blob);
    memcpy(h, STATE_MAGIC, 8);
    put_u32(h + 8, STATE_VERSION);
    put_u32(h + 12, STATE_HEADER);
    put_u64(h + 16, STATE_HEADER + pb + ob);
    put_u64(h + 32, (uint64_t)s->step);
    put_u64(h + 40, s->epoch);
    put_u64(h + 48, s->index);
    put_u64(h + 56, s->data_seed);
    put_u64(h + 64, s->init_seed);
    put_u64(h + 72, s->n_train_rows);
    put_u64(h + 80, s->tokens_seen);
    put_u64(h + 88, (uint64_t)s->skipped);
    put_u64(h + 96, (uint64_t)s->last_eval_step);
    put_u64(h + 104, la->n_params);
    put_u64(h + 112, ob);
    put_f64(h + 120, s->train_seconds);
    uint32_t crc = crc_bytes(0, h + 32, STATE_HEADER - 32);
    crc = crc_bytes(crc, la->params, pb);
    crc = crc_bytes(crc, blob, ob);
    put_u32(h + 24, crc);
    fs_part parts[3] = {{h, STATE_HEADER}, {la->params, pb}, {blob, ob}};
    gt_status st = fs_write_atomic_parts(path, parts, 3, err);
    free(blob);
    return st;
}

static gt_status state_read(const char *path, ckpt_state *s, lora_adapter *la, optim *opt, gt_error *err) {
    uint8_t *d;
    size_t len;
    gt_status st = fs_read_file(path, (char **)&d, &len, err);
    if (st) return st;
    size_t pb = la->n_params * sizeof(float), ob = optim_serialized_size(opt);
    if (len < STATE_HEADER || memcmp(d, STATE_MAGIC, 8) != 0)
        st = gt_fail(err, GT_EFORMAT, "%s: not a gptoss checkpoint state (no " STATE_MAGIC " header)", path);
    else if (get_u32(d + 8) != STATE_VERSION || get_u32(d + 12) != STATE_HEADER)
        st = gt_fail(err, GT_EFORMAT, "%s: state version %u (header %u bytes); this gptoss reads version %u", path,
                     get_u32(d + 8), get_u32(d + 12), STATE_VERSION);
    else if (get_u64(d + 16) != len)
        st = gt_fail(err, GT_EFORMAT, "%s: %zu bytes, but its header says %llu: the file is truncated or damaged",
                     path, len, (unsigned long long)get_u64(d + 16));
    else if (crc_bytes(0, d + 32, len - 32) != get_u32(d + 24))
        st = gt_fail(err, GT_EFORMAT, "%s: CRC-32 mismatch: the file is damaged", path);
    else if (get_u64(d + 104) != la->n_params)
        st = gt_fail(err, GT_EINVAL, "%s: %llu LoRA parameters, but the run's LoRA config makes %zu: the checkpoint "
                     "is from another lora config", path, (unsigned long long)get_u64(d + 104), la->n_params);
    else if (get_u64(d + 112) != ob || STATE_HEADER + pb + ob != len)
        st = gt_fail(err, GT_EINVAL, "%s: %llu bytes of optimizer state, but this optimizer has %zu: the checkpoint "
                     "is from another optim config", path, (unsigned long long)get_u64(d + 112), ob);
    if (!st) st = optim_deserialize(opt, d + STATE_HEADER + pb, ob, err);
    if (st == GT_OK) {
        memcpy(la->params, d + STATE_HEADER, pb);
        s->step = (int64_t)get_u64(d + 32);
        s->epoch = get_u64(d + 40);
        s->index = get_u64(d + 48);
        s->data_seed = get_u64(d + 56);
        s->init_seed = get_u64(d + 64);
        s->n_train_rows = get_u64(d + 72);
        s->tokens_seen = get_u64(d + 80);
        s->skipped = (int64_t)get_u64(d + 88);
        s->last_eval_step = (int64_t)get_u64(d + 96);
        s->train_seconds = get_f64(d + 120);
    } else if (st == GT_EINVAL || st == GT_EFORMAT) {
        gt_wrap(err, "checkpoint");
    }
    free(d);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Public

gt_status ckpt_write(const char *run_dir, const ckpt_state *s, const lora_adapter *la, const optim *opt,
                     const char *base_model, int keep_last, char *out, size_t out_size, gt_error *err) {
    char name[64];
    snprintf(name, sizeof name, "step-%08lld", (long long)s->step);
    char *cdir = fs_join(run_dir, "checkpoints"), *final = fs_join(cdir, name);
    char *tmp = xasprintf("%s.tmp", final), *marker = fs_join(final, "COMPLETE");
    gt_status st = fs_mkdirs(cdir, err);
    if (!st && fs_exists(marker)) { // written before (a resumed run that had already finished)
        st = manifest_check(final, err);
        goto pruned;
    }
    if (!st && fs_exists(final)) st = rm_flat_dir(final, err); // unfinished: replaced
    if (!st && fs_exists(tmp)) st = rm_flat_dir(tmp, err);
    if (!st && mkdir(tmp, 0755) != 0)
        st = gt_fail(err, GT_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    if (st) goto done;
    char *sp = fs_join(tmp, "state.bin");
    st = state_write(sp, s, la, opt, err);
    free(sp);
    if (!st) st = lora_peft_save(la, tmp, base_model, err);
    if (!st) st = fs_fsync_dir(tmp, err);
    if (!st && rename(tmp, final) != 0)
        st = gt_fail(err, GT_EIO, "%s: rename to %s failed: %s", tmp, final, strerror(errno));
    if (!st) st = fs_fsync_dir(cdir, err);
    if (!st) st = manifest_write(final, s->step, err);
    if (st) {
        gt_error ignored;
        rm_flat_dir(tmp, &ignored);
        if (!fs_exists(marker)) rm_flat_dir(final, &ignored);
        goto done;
    }
pruned:
    if (!st) st = prune(run_dir, keep_last, err);
    if (!st) snprintf(out, out_size, "%s", final);
done:
    if (st) gt_wrap(err, "checkpoint %s", final);
    free(cdir);
    free(final);
    free(tmp);
    free(marker);
    return st;
}

gt_status ckpt_read(const char *ckpt_dir, ckpt_state *s, lora_adapter *la, optim *opt, gt_error *err) {
    gt_status st = manifest_check(ckpt_dir, err);
    if (st) return st;
    char *p = fs_join(ckpt_dir, "state.bin");
    st = state_read(p, s, la, opt, err);
    free(p);
    return st;
}

gt_status train_run_dir_clear(const char *run_dir, gt_error *err) {
    static const char *const FILES[] = {"config.resolved.yaml", "train.log", "metrics.jsonl", "loss.svg"};
    gt_status st = GT_OK;
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0] && !st; i++) {
        char *p = fs_join(run_dir, FILES[i]);
        if (unlink(p) != 0 && errno != ENOENT) st = gt_fail(err, GT_EIO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
    }
    char *adapter = fs_join(run_dir, "adapter"), *cdir = fs_join(run_dir, "checkpoints");
    if (!st) st = rm_flat_dir(adapter, err);
    if (!st && fs_is_dir(cdir)) {
        DIR *d = opendir(cdir);
        struct dirent *e;
        while (d && !st && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = fs_join(cdir, e->d_name);
            st = fs_is_dir(p) ? rm_flat_dir(p, err) : (unlink(p) ? gt_fail(err, GT_EIO, "%s: cannot remove: %s", p,
                                                                            strerror(errno)) : GT_OK);
            free(p);
        }
        if (d) closedir(d);
        if (!st && rmdir(cdir) != 0) st = gt_fail(err, GT_EIO, "%s: cannot remove: %s", cdir, strerror(errno));
    }
    free(adapter);
    free(cdir);
    if (st) gt_wrap(err, "--overwrite");
    return st;
}

// core: errors and logging, dtypes and bf16/fp16 conversion, safetensors read (mmap, shards) and
// atomic write, HF cache resolution, file-system helpers, build facts.
//
// The one door of core/. Other folders include only this header (and core/cuda_*.h for CUDA helpers).
//
// Two kinds of failure (STYLE.md):
//   - bad user input (files, configs, flags, rows): a function returns a gt_status != GT_OK and fills a
//     gt_error whose message names the file, the place and, where known, the fix. Never an assert.
//   - programming errors and failed allocations: CHECK()/xmalloc() print the place and abort.
#ifndef GPTOSS_CORE_H
#define GPTOSS_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------
// Errors
typedef enum gt_status {
    GT_OK = 0,
    GT_EINVAL,       // bad argument / config value
    GT_EIO,          // read/write failed (disk full, permission)
    GT_ENOTFOUND,    // file, tensor, model not found
    GT_EFORMAT,      // malformed file content
    GT_EUNSUPPORTED, // valid but not supported by gptoss
    GT_ENOMEM,       // an allocation the user's sizes asked for did not fit
} gt_status;

typedef struct gt_error {
    gt_status status;
    char msg[2048];
} gt_error;

// Sets err (if not NULL) to a printf-formatted message and returns st. Usage: return gt_fail(err, ...).
gt_status gt_fail(gt_error *err, gt_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Prefixes an existing message: "context: old message". Returns err->status.
gt_status gt_wrap(gt_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *gt_status_name(gt_status st);

// Fatal checks for programming errors (never for user input).
#define CHECK(cond)                                                                                   \
    do {                                                                                              \
        if (!(cond)) gt_die(__FILE__, __LINE__, "check failed: %s", #cond);                           \
    } while (0)
_Noreturn void gt_die(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *xmalloc(size_t n);            // aborts with the size on failure
void *xcalloc(size_t n, size_t sz); // aborts with the size on failure
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---------------------------------------------------------------------------------------------------
// Logging (stderr). GPTOSS_LOG=debug|info|warn|error sets the level; default info.
typedef enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

// ---------------------------------------------------------------------------------------------------
// Dtypes (the safetensors set) and conversions.
typedef enum dtype {
    DT_BOOL, DT_U8, DT_I8, DT_I16, DT_I32, DT_I64, DT_F16, DT_BF16, DT_F32, DT_F64,
    DT_F8_E4M3, DT_F8_E5M2, DT_COUNT
} dtype;
size_t dtype_size(dtype dt);           // bytes per element
const char *dtype_name(dtype dt);      // safetensors spelling: "BF16", "F8_E4M3", ...
int dtype_from_name(const char *name); // -1 when unknown

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_bf16(float f) { // round to nearest even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); // round to nearest even
// Converts n elements of a float-like dtype (F32, BF16, F16, F64) to fp32. GT_EUNSUPPORTED otherwise.
gt_status dtype_to_f32(dtype dt, const void *src, float *dst, size_t n, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// safetensors
//
// Reader: mmaps every file read-only and validates the header completely before anything is used:
// header length sane and within the file, JSON well formed, dtype known, shape x dtype size equal to the
// byte span, spans inside the data area and not overlapping, __metadata__ values strings only; a sharded
// checkpoint's index.json and its shards must agree, and a name may occur in one shard only.
// A path may be a .safetensors file, a model.safetensors.index.json, or a directory holding either
// (model.safetensors.index.json preferred, else model.safetensors, else the single *.safetensors file).
#define ST_MAX_DIMS 8
typedef struct st_tensor {
    const char *name;
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data; // into the mmap; valid until safetensors_close
    size_t nbytes;
    int file;            // index into safetensors.files
} st_tensor;

typedef struct st_file {
    char *path;
    const uint8_t *map;
    size_t size;
} st_file;

typedef struct safetensors {
    int n_files;
    st_file *files;
    int n_tensors;
    st_tensor *tensors;   // sorted by name
    int n_meta;
    char **meta_keys;     // __metadata__ of the first file
    char **meta_values;
} safetensors;

gt_status safetensors_open(safetensors *st, const char *path, gt_error *err);
void safetensors_close(safetensors *st);
const st_tensor *safetensors_find(const safetensors *st, const char *name); // NULL when absent
// Header parse of one file's bytes (exposed for the fuzz target and tests): validates and appends the
// tensors to st (data pointers into buf). `what` names the file in messages.
gt_status safetensors_parse(safetensors *st, const uint8_t *buf, size_t len, int file_index,
                            const char *what, gt_error *err);

// Writer: metadata {"format": "pt"} plus n_meta extra pairs (meta_kv = key0, value0, key1, ...); the data
// laid out as Python's safetensors lays it out (by dtype, larger first, then by name), so every tensor is
// aligned to its element size; written to a temporary name, fsynced, renamed over PATH, directory
// fsynced (a failure leaves any old PATH as it was). Bad names/shapes return GT_EINVAL.
typedef struct st_write_tensor {
    const char *name;
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; // numel * dtype_size bytes
} st_write_tensor;
gt_status safetensors_write(const char *path, const st_write_tensor *tensors, int n,
                            const char *const *meta_kv, int n_meta, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// HF cache: "org/name" -> snapshot directory. HF_HUB_CACHE, else HF_HOME/hub, else
// ~/.cache/huggingface/hub; models--org--name/refs/<revision> -> snapshots/<hash>/ (revision may also be
// a commit hash). An existing path passes through unchanged. Not found: one message listing each place
// looked and the fix (`huggingface-cli download org/name`).
typedef enum hf_repo_kind { HF_MODEL, HF_DATASET } hf_repo_kind;
gt_status hfcache_resolve(const char *name_or_path, hf_repo_kind kind, const char *revision, char *out,
                          size_t out_size, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Files
gt_status fs_read_file(const char *path, char **data, size_t *len, gt_error *err); // NUL-terminated
gt_status fs_write_atomic(const char *path, const void *data, size_t len, gt_error *err);
// The concatenation of n parts, written the same way (temporary name, fsync, rename, fsync the directory);
// lets large files (safetensors) be written without first copying them into one buffer.
typedef struct fs_part {
    const void *data;
    size_t len;
} fs_part;
gt_status fs_write_atomic_parts(const char *path, const fs_part *parts, int n, gt_error *err);
gt_status fs_mkdirs(const char *path, gt_error *err); // mkdir -p
int fs_exists(const char *path);
int fs_is_dir(const char *path);
gt_status fs_fsync_dir(const char *dir, gt_error *err);
char *fs_join(const char *a, const char *b); // xmalloc'ed "a/b"

// ---------------------------------------------------------------------------------------------------
// Strings
size_t str_edit_distance(const char *a, const char *b); // Levenshtein, for "did you mean" suggestions

// ---------------------------------------------------------------------------------------------------
// Random numbers: our own generator, so that a seed gives the same numbers on any machine.
// splitmix64 (Vigna's constants): advances *state by the golden-ratio step and returns the next value.
static inline uint64_t rng_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// ---------------------------------------------------------------------------------------------------
// Build facts and devices
const char *gptoss_version(void);
const char *gptoss_git_commit(void);
const char *gptoss_build_type(void);
int gptoss_have_cuda(void);
// Writes a one-line description of each GPU (or "none") into buf; returns the GPU count.
int gptoss_gpu_list(char *buf, size_t size);

#endif

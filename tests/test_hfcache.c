// HF cache resolution on a fake cache the test builds in $GPTOSS_TMP/hfcache, laid out as
// huggingface_hub lays it out (refs/<rev> holds the commit hash; files under snapshots/<hash>/ are
// symlinks to ../../blobs/<sha>). Checks: HF_HUB_CACHE > HF_HOME/hub > $HOME/.cache/huggingface/hub,
// refs/main, a named revision, a pinned commit hash, datasets, legacy names without an org, a path
// passing through, and the contents of the not-found message.
#include "core/core.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

static char *root; // $GPTOSS_TMP/hfcache

static void must(gt_status s, const gt_error *err) {
    if (s != GT_OK) gt_die(__FILE__, __LINE__, "test setup: %s", err->msg);
}

static void put(const char *dir, const char *name, const char *text) {
    gt_error err;
    must(fs_mkdirs(dir, &err), &err);
    char *p = fs_join(dir, name);
    test_write_file(p, text, strlen(text));
    free(p);
}

// A 40-hex commit id made from a seed character.
static void hash_of(char c, char out[41]) {
    for (int i = 0; i < 40; i++) out[i] = "0123456789abcdef"[(c * 7 + i * 3) & 15];
    out[40] = 0;
}

// CACHE/<kind>--org--name with snapshots/<hash>/config.json -> ../../blobs/<blob>, the blob holding
// `content`; refs/<ref> names the hash unless ref is NULL (a snapshot reachable only by its hash).
static void make_snapshot(const char *cache, const char *repo_dir, const char *ref, const char *hash,
                          const char *content) {
    gt_error err;
    char *repo = fs_join(cache, repo_dir), *blobs = fs_join(repo, "blobs"), *refs = fs_join(repo, "refs");
    char *snaps = fs_join(repo, "snapshots"), *snap = fs_join(snaps, hash);
    char blob[65];
    for (int i = 0; i < 64; i++) blob[i] = "0123456789abcdef"[(unsigned char)(content[i % strlen(content)] + i) & 15];
    blob[64] = 0;
    put(blobs, blob, content);
    must(fs_mkdirs(snap, &err), &err);
    char *link = fs_join(snap, "config.json"), *target = xasprintf("../../blobs/%s", blob);
    if (unlink(link) != 0 && errno != ENOENT) gt_die(__FILE__, __LINE__, "unlink %s", link);
    if (symlink(target, link) != 0) gt_die(__FILE__, __LINE__, "symlink %s: %s", link, strerror(errno));
    if (ref) {
        char *text = xasprintf("%s", hash); // huggingface_hub writes the bare hash, no newline
        char *refdir = fs_join(refs, ref), *slash = strrchr(refdir, '/');
        *slash = 0;
        put(refdir, slash + 1, text);
        free(refdir);
        free(text);
    }
    free(link);
    free(target);
    free(repo);
    free(blobs);
    free(refs);
    free(snaps);
    free(snap);
}

// Resolves and checks that the result is CACHE/repo_dir/snapshots/<hash> and that config.json there
// (a symlink into blobs/) reads `content`.
static void expect_resolves(const char *name, hf_repo_kind kind, const char *rev, const char *cache,
                            const char *repo_dir, const char *hash, const char *content) {
    char out[4096];
    gt_error err;
    gt_status s = hfcache_resolve(name, kind, rev, out, sizeof out, &err);
    EXPECT(s == GT_OK, "%s@%s: %s", name, rev ? rev : "(main)", err.msg);
    if (s != GT_OK) return;
    char *want = xasprintf("%s/%s/snapshots/%s", cache, repo_dir, hash);
    EXPECT(!strcmp(out, want), "%s@%s resolved to %s, want %s", name, rev ? rev : "(main)", out, want);
    char *cfg = fs_join(out, "config.json"), *text = NULL;
    EXPECT(fs_read_file(cfg, &text, NULL, &err) == GT_OK && !strcmp(text, content), "%s: '%s', want '%s'", cfg,
           text ? text : err.msg, content);
    free(text);
    free(cfg);
    free(want);
}

// Must fail with status `st` and a message containing every string in `parts` (NULL-terminated).
static void expect_fails(const char *name, hf_repo_kind kind, const char *rev, gt_status st, const char *const *parts) {
    char out[4096];
    gt_error err = {0};
    gt_status s = hfcache_resolve(name, kind, rev, out, sizeof out, &err);
    EXPECT(s == st, "%s@%s: status %s, want %s (%s)", name, rev ? rev : "(main)", gt_status_name(s),
           gt_status_name(st), s == GT_OK ? out : err.msg);
    for (int i = 0; parts[i]; i++)
        EXPECT(strstr(err.msg, parts[i]), "%s: message lacks '%s':\n%s", name, parts[i], err.msg);
}

int main(void) {
    root = test_tmpdir("hfcache");
    char *hub = fs_join(root, "hub_cache"), *hf_home = fs_join(root, "hf_home"), *home = fs_join(root, "home");
    char *home_hub = fs_join(home, ".cache/huggingface/hub"), *hf_home_hub = fs_join(hf_home, "hub");
    char h1[41], h2[41], h3[41], h4[41], h5[41], h6[41], h7[41], h8[41];
    hash_of('a', h1), hash_of('b', h2), hash_of('c', h3), hash_of('d', h4), hash_of('e', h5), hash_of('f', h6),
        hash_of('g', h7), hash_of('h', h8);

    make_snapshot(hub, "models--org--name", "main", h1, "{\"from\": \"HF_HUB_CACHE main\"}");
    make_snapshot(hub, "models--org--name", "v1", h2, "{\"from\": \"HF_HUB_CACHE v1\"}");
    make_snapshot(hub, "models--org--name", "refs/pr/7", h7, "{\"from\": \"HF_HUB_CACHE pr 7\"}");
    make_snapshot(hub, "models--org--name", NULL, h3, "{\"from\": \"HF_HUB_CACHE pinned\"}");
    make_snapshot(hub, "datasets--org--data", "main", h6, "{\"from\": \"dataset\"}");
    make_snapshot(hub, "models--gpt2", "main", h8, "{\"from\": \"legacy name\"}");
    make_snapshot(hf_home_hub, "models--org--name", "main", h4, "{\"from\": \"HF_HOME\"}");
    make_snapshot(home_hub, "models--org--name", "main", h5, "{\"from\": \"HOME\"}");
    // A ref whose snapshot is gone, and a ref that does not hold a hash.
    char *refs = fs_join(hub, "models--org--name/refs");
    put(refs, "dangling", "0000000000000000000000000000000000000000");
    put(refs, "garbage", "not a hash\n");
    free(refs);

    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HF_HOME", hf_home, 1);
    setenv("HOME", home, 1);
    expect_resolves("org/name", HF_MODEL, NULL, hub, "models--org--name", h1, "{\"from\": \"HF_HUB_CACHE main\"}");
    expect_resolves("org/name", HF_MODEL, "main", hub, "models--org--name", h1, "{\"from\": \"HF_HUB_CACHE main\"}");
    expect_resolves("org/name", HF_MODEL, "v1", hub, "models--org--name", h2, "{\"from\": \"HF_HUB_CACHE v1\"}");
    expect_resolves("org/name", HF_MODEL, "refs/pr/7", hub, "models--org--name", h7, "{\"from\": \"HF_HUB_CACHE pr 7\"}");
    expect_resolves("org/name", HF_MODEL, h3, hub, "models--org--name", h3, "{\"from\": \"HF_HUB_CACHE pinned\"}");
    expect_resolves("org/data", HF_DATASET, NULL, hub, "datasets--org--data", h6, "{\"from\": \"dataset\"}");
    expect_resolves("gpt2", HF_MODEL, NULL, hub, "models--gpt2", h8, "{\"from\": \"legacy name\"}");

    // Precedence: without HF_HUB_CACHE (unset or empty) HF_HOME/hub, then $HOME/.cache/huggingface/hub.
    setenv("HF_HUB_CACHE", "", 1);
    expect_resolves("org/name", HF_MODEL, NULL, hf_home_hub, "models--org--name", h4, "{\"from\": \"HF_HOME\"}");
    unsetenv("HF_HUB_CACHE");
    expect_resolves("org/name", HF_MODEL, NULL, hf_home_hub, "models--org--name", h4, "{\"from\": \"HF_HOME\"}");
    unsetenv("HF_HOME");
    expect_resolves("org/name", HF_MODEL, NULL, home_hub, "models--org--name", h5, "{\"from\": \"HOME\"}");

    // A path that exists passes through unchanged, even one that looks like org/name.
    char out[4096];
    gt_error err;
    const char *paths[] = {hub, "tests", "tests/test_hfcache.c"};
    for (int i = 0; i < 3; i++) {
        gt_status s = hfcache_resolve(paths[i], HF_MODEL, NULL, out, sizeof out, &err);
        EXPECT(s == GT_OK && !strcmp(out, paths[i]), "path %s -> %s", paths[i], s == GT_OK ? out : err.msg);
    }

    // Not found: one message with each place looked and the command that fixes it.
    setenv("HF_HUB_CACHE", hub, 1);
    char *missing_repo = fs_join(hub, "models--org--missing");
    expect_fails("org/missing", HF_MODEL, NULL, GT_ENOTFOUND,
                 (const char *[]){"model org/missing not found", "a local path 'org/missing'", missing_repo,
                                  "HF cache from $HF_HUB_CACHE", "huggingface-cli download org/missing", NULL});
    char *missing_ds = fs_join(hub, "datasets--org--name");
    expect_fails("org/missing", HF_MODEL, "main", GT_ENOTFOUND,
                 (const char *[]){"huggingface-cli download org/missing (or", NULL}); // main is the default
    expect_fails("org/name", HF_DATASET, NULL, GT_ENOTFOUND,
                 (const char *[]){"dataset org/name not found", missing_ds,
                                  "huggingface-cli download org/name --repo-type dataset", NULL});
    char *missing_ref = fs_join(hub, "models--org--name/refs/v2");
    expect_fails("org/name", HF_MODEL, "v2", GT_ENOTFOUND,
                 (const char *[]){missing_ref, "revision 'v2'", "huggingface-cli download org/name --revision v2", NULL});
    char *missing_snap = xasprintf("%s/models--org--name/snapshots/%s", hub, h4);
    expect_fails("org/name", HF_MODEL, h4, GT_ENOTFOUND,
                 (const char *[]){missing_snap, "no such directory", "--revision ", h4, NULL});
    expect_fails("org/name", HF_MODEL, "dangling", GT_ENOTFOUND,
                 (const char *[]){"refs/dangling -> ", "snapshots/0000000000000000000000000000000000000000", NULL});
    expect_fails("org/name", HF_MODEL, "garbage", GT_EFORMAT,
                 (const char *[]){"refs/garbage does not hold a commit hash", "huggingface-cli download", NULL});
    unsetenv("HF_HUB_CACHE");
    char *home_missing = fs_join(home_hub, "models--org--missing");
    expect_fails("org/missing", HF_MODEL, NULL, GT_ENOTFOUND,
                 (const char *[]){home_missing, "the default HF cache; set HF_HUB_CACHE or HF_HOME", NULL});
    unsetenv("HOME");
    expect_fails("org/missing", HF_MODEL, NULL, GT_ENOTFOUND,
                 (const char *[]){"HF_HUB_CACHE, HF_HOME and HOME are all unset", "huggingface-cli download", NULL});
    setenv("HF_HUB_CACHE", hub, 1);

    // Neither a path nor a hub id; a revision escaping refs/; an output buffer too small.
    expect_fails("./no/such/dir", HF_MODEL, NULL, GT_ENOTFOUND,
                 (const char *[]){"./no/such/dir: no such file or directory", NULL});
    expect_fails("a/b/c", HF_MODEL, NULL, GT_ENOTFOUND, (const char *[]){"not a hub model id", NULL});
    expect_fails("org/name", HF_MODEL, "../../x", GT_EINVAL, (const char *[]){"revision '../../x'", NULL});
    char tiny[8];
    gt_status s = hfcache_resolve("org/name", HF_MODEL, NULL, tiny, sizeof tiny, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "longer than 7 bytes"), "small buffer: %s", err.msg);

    free(missing_repo);
    free(missing_ds);
    free(missing_ref);
    free(missing_snap);
    free(home_missing);
    free(hub);
    free(hf_home);
    free(home);
    free(home_hub);
    free(hf_home_hub);
    free(root);
    return test_finish("test_hfcache");
}

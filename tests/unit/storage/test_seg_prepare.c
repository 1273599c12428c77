/* test_seg_prepare.c — zeros written ahead of a payload segment's end (store_seg_prepare):
 * after a batch the current segment has at least a MiB of zeros beyond its end (bounded by
 * the roll size), later batches overwrite them instead of growing the file, and a reopened
 * store appends right after the last entry's payload (not at the file's end), with every
 * entry intact. Fails when no zeros are written, when a batch appends past them, or when
 * the end at open is taken from the file size. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_seg_set_max */

#define MiB (1u << 20)

static int write_one(struct store *s, uint64_t seq, raft_index index, uint32_t len)
{
    struct store_write w;
    st_job(&w, seq, index, 1, 1, 1);
    raft_blob_unref(w.entries[0].data);
    w.entries[0].data = st_blob(index, 1, len);
    return store_write_sync(s, &w);
}

static off_t seg_size(const char *dir, unsigned seq)
{
    char p[128];
    struct stat sb;
    snprintf(p, sizeof p, "%s/seg-%016x.dat", dir, seq);
    return stat(p, &sb) == 0 ? sb.st_size : -1;
}

/* Whether bytes [from, to) of segment seq are all zero. */
static bool seg_zero(const char *dir, unsigned seq, off_t from, off_t to)
{
    char p[128];
    snprintf(p, sizeof p, "%s/seg-%016x.dat", dir, seq);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return false;
    static uint8_t buf[64 << 10];
    bool zero = true;
    for (off_t at = from; zero && at < to;) {
        size_t n = (size_t)(to - at) < sizeof buf ? (size_t)(to - at) : sizeof buf;
        ssize_t r = pread(fd, buf, n, at);
        if (r <= 0) zero = false;
        for (ssize_t i = 0; zero && i < r; i++)
            zero = buf[i] == 0;
        at += r > 0 ? r : 0;
    }
    close(fd);
    return zero;
}

static void check_entries(struct store *s, raft_index last, const uint32_t *lens)
{
    struct raft_boot b;
    CHECK_EQ_U(store_load(s, &b), 0);
    CHECK_EQ_U(b.n_entries, last);
    store_boot_free(&b);
    for (raft_index i = 1; i <= last; i++) {
        struct raft_blob *p = NULL;
        CHECK_EQ_U(store_fetch(s, i, &p), 0);
        CHECK(st_blob_ok(p, i, 1, lens[i - 1]));
        raft_blob_unref(p);
    }
}

static void test_zeros_ahead(void)
{
    char dir[64];
    st_tmpdir(dir, sizeof dir, "segprep");
    static const uint32_t lens[] = {1000, 2000, 3000, 500};
    struct store *s = st_open(dir);
    CHECK_EQ_U(write_one(s, 1, 1, lens[0]), 0);
    off_t size = seg_size(dir, 1);
    CHECK(size >= (off_t)(lens[0] + MiB / 2)); /* zeros ahead, not just the payload */
    CHECK(seg_zero(dir, 1, lens[0], size));
    CHECK_EQ_U(write_one(s, 2, 2, lens[1]), 0);
    CHECK_EQ_U(seg_size(dir, 1), size); /* overwrote zeros: no append */
    store_close(s);

    /* Reopened: the end is after entry 2's payload (1000 + 2000), not at the file's size. */
    s = st_open(dir);
    CHECK_EQ_U(write_one(s, 3, 3, lens[2]), 0);
    CHECK_EQ_U(seg_size(dir, 1), size);
    CHECK(seg_zero(dir, 1, lens[0] + lens[1] + lens[2], size));
    check_entries(s, 3, lens);
    store_close(s);
    s = st_open(dir);
    check_entries(s, 3, lens);
    store_close(s);
    st_rmtree(dir);
}

/* A small roll size bounds the zeros: no segment grows past it. */
static void test_zeros_bounded_by_roll(void)
{
    char dir[64];
    st_tmpdir(dir, sizeof dir, "segprep");
    static const uint32_t lens[] = {3000, 3000, 3000, 500}; /* entry 3 rolls */
    struct store *s = st_open(dir);
    store_seg_set_max(s, 8192);
    for (raft_index i = 1; i <= 4; i++)
        CHECK_EQ_U(write_one(s, i, i, lens[i - 1]), 0);
    for (unsigned q = 1; q <= 2; q++) {
        off_t z = seg_size(dir, q);
        CHECK(z > 0 && z <= 8192);
    }
    check_entries(s, 4, lens);
    store_close(s);
    st_rmtree(dir);
}

int main(void)
{
    RUN(test_zeros_ahead);
    RUN(test_zeros_bounded_by_roll);
    return check_report();
}

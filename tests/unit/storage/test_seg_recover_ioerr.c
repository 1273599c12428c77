/* test_seg_recover_ioerr.c — store_open's torn-batch check (store_seg_recover) must cut the
 * log only on evidence of a torn write (payload missing, short or failing its CRC), never on a
 * read error: the entries it checks (the last payload batch) may have been acknowledged.
 *
 * Setup: two acknowledged store_write_sync batches with tiny segments, so that the last
 * batch's first entry lies in a segment that is no longer the current one. That segment is
 * then swapped for a FIFO (pread fails with ESPIPE: an I/O error, not corruption) and the
 * store opened once; the real file is put back and the store opened again. Every
 * acknowledged entry must still be there (the first open may fail, but must not delete
 * anything). Fails while seg_payload_ok treats any store_seg_read error as a torn payload. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_seg_set_max */

#define SEG_MAX 4096u

static int write_job(struct store *s, uint64_t seq, raft_index first, const uint32_t *lens,
                     size_t n)
{
    struct store_write w;
    st_job(&w, seq, first, n, 1, 1);
    for (size_t i = 0; i < n; i++) {
        raft_blob_unref(w.entries[i].data);
        w.entries[i].data = st_blob(first + i, 1, lens[i]);
    }
    return store_write_sync(s, &w);
}

static void test_read_error_keeps_acked_entries(void)
{
    char dir[64];
    st_tmpdir(dir, sizeof dir, "segioerr");
    struct store *s = st_open(dir);
    store_seg_set_max(s, SEG_MAX);
    /* Batch 1: entry 1 at seg 1 [0, 3000). Batch 2: entry 2 at seg 1 [3000, 3500) (at the
     * recorded durable position), entry 3 rolls to seg 2. Both acknowledged. */
    static const uint32_t lens1[] = {3000}, lens2[] = {500, 3000};
    CHECK_EQ_U(write_job(s, 1, 1, lens1, 1), 0);
    CHECK_EQ_U(write_job(s, 2, 2, lens2, 2), 0);
    store_close(s);

    char seg1[128], bak[128];
    snprintf(seg1, sizeof seg1, "%s/seg-0000000000000001.dat", dir);
    snprintf(bak, sizeof bak, "%s/seg-1.bak", dir);
    CHECK(rename(seg1, bak) == 0);
    CHECK(mkfifo(seg1, 0600) == 0);

    /* An unreadable segment: open may fail, but must not delete acknowledged entries. */
    char err[256] = "";
    s = NULL;
    int rv = store_open(dir, &s, err, sizeof err);
    fprintf(stderr, "open with an unreadable segment: %s %s\n", rv ? err_str(rv) : "ok", err);
    store_close(s);

    CHECK(unlink(seg1) == 0);
    CHECK(rename(bak, seg1) == 0);
    s = st_open(dir);
    struct raft_boot boot;
    CHECK_EQ_U(store_load(s, &boot), 0);
    CHECK_EQ_U(boot.n_entries, 3); /* entries 2 and 3 were acknowledged */
    for (raft_index i = 2; i <= 3; i++) {
        struct raft_blob *b = NULL;
        CHECK_EQ_U(store_fetch(s, i, &b), 0);
        CHECK(st_blob_ok(b, i, 1, lens2[i - 2]));
        raft_blob_unref(b);
    }
    store_boot_free(&boot);
    store_close(s);
    st_rmtree(dir);
}

int main(void)
{
    RUN(test_read_error_keeps_acked_entries);
    return check_report();
}

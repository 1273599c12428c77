/* replay_main.c — runs a fuzz target over every file of the given files or directories (the
 * seed corpus), for builds without libFuzzer. Fails when it finds no input at all. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define REPLAY_MAX_BYTES (16u << 20)

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX_BYTES);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX_BYTES, f) : 0;
    fclose(f);
    if (!buf) return -1;
    /* An exact-size copy, so the sanitizers see any read past the input. */
    uint8_t *exact = malloc(n ? n : 1);
    if (exact) {
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
    }
    free(exact);
    free(buf);
    return exact ? 1 : -1;
}

static int replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return replay_file(path);
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        return -1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count >= 0) {
        if (e->d_name[0] == '.') continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        int r = replay_path(child);
        count = r < 0 ? -1 : count + r;
    }
    closedir(d);
    return count;
}

int main(int argc, char **argv)
{
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int r = replay_path(argv[i]);
        if (r < 0) return 1;
        total += r;
    }
    fprintf(stderr, "replayed %d inputs\n", total);
    return total > 0 ? 0 : 1;
}

/* fuzz.h — the libFuzzer entry point every tests/fuzz/fuzz_NAME.c defines. Under clang it is
 * driven by libFuzzer (run_fuzz.sh); under gcc by replay_main.c over the seed corpus. */
#ifndef RAFTFS_FUZZ_H
#define RAFTFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

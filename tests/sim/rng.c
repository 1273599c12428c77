/* rng.c — the simulator's only source of randomness: xoshiro256** seeded through splitmix64.
 * Never reads the clock or rand(): a run is a pure function of its seed. */
#include "sim.h"

/* splitmix64's output function: also used to derive digests of small integers. */
uint64_t sim_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void sim_rng_seed(struct sim_rng *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = sim_mix(seed * 4 + (uint64_t)i);
}

static uint64_t sim_rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(struct sim_rng *g)
{
    uint64_t *s = g->s;
    uint64_t result = sim_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sim_rng_rotl(s[3], 45);
    return result;
}

/* The modulo bias is irrelevant for test schedules (n is tiny next to 2^64). */
uint64_t sim_rng_below(struct sim_rng *g, uint64_t n)
{
    return sim_rng_next(g) % n;
}

uint64_t sim_rng_range(struct sim_rng *g, uint64_t lo, uint64_t hi)
{
    return lo + sim_rng_below(g, hi - lo + 1);
}

bool sim_rng_chance(struct sim_rng *g, uint32_t permille)
{
    return permille > 0 && sim_rng_below(g, 1000) < permille;
}

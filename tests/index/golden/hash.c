#include <stdint.h>
#include <string.h>

#define FNV_PRIME 16777619u

/* One entry of the table. */
struct entry {
    const char *key;
    int value;
};

typedef enum { RED, GREEN, BLUE } color_t;

static const uint32_t crc_table[] = {
    0x00000000, 0x77073096, 0xee0e612c,
    0x990951ba, 0x076dc419, 0x706af48f,
};

/* FNV-1a hash of a NUL-terminated string. */
uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) {
        h ^= (uint8_t)*s++;
        h *= FNV_PRIME;
    }
    return h;
}

/* vml_str_hash: equal strings hash alike, and keys that differ only in a
 * late byte, a tail byte or their length spread over a table's buckets
 * (resource keys share long prefixes: "file:blk:serial:...:INODE"). */
#include "vml-str-hash.h"

#include <string.h>

static void
test_equal_strings(void)
{
    g_autofree char *a = g_strdup("file:blk:serial:1586632956117218:10985431");
    g_autofree char *b = g_strdup(a);
    g_assert_true(a != b);
    g_assert_cmpuint(vml_str_hash(a), ==, vml_str_hash(b));
    g_assert_cmpuint(vml_str_hash(""), ==, vml_str_hash(""));
}

/* 4096 keys into 1024 buckets by the low bits: no bucket may get more
 * than 16 (a fair spread gives 4 on average). */
static void
spread(const char *fmt)
{
    guint buckets[1024] = { 0 };
    for (guint i = 0; i < 4096; i++) {
        g_autofree char *key = g_strdup_printf(fmt, i);
        buckets[vml_str_hash(key) & 1023]++;
    }
    for (guint i = 0; i < G_N_ELEMENTS(buckets); i++)
        g_assert_cmpuint(buckets[i], <=, 16);
}

static void
test_spread(void)
{
    spread("file:blk:serial:1586632956117218:%u");      /* varying tail */
    spread("file:blk:serial:1586632956117218:%08u");    /* a whole last word */
    spread("%u:file:blk:serial:1586632956117218");      /* varying head */
    spread("/var/lib/libvirt/images/vm-%u.qcow2");
}

static void
test_length_counts(void)
{
    /* Keys that are prefixes of each other, padded with zero bytes in the
     * last word, must not all collide. */
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    char key[65];
    for (guint n = 0; n < 64; n++) {
        memset(key, 'a', n);
        key[n] = '\0';
        g_hash_table_add(seen, GUINT_TO_POINTER(vml_str_hash(key)));
    }
    g_assert_cmpuint(g_hash_table_size(seen), ==, 64);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/str-hash/equal-strings", test_equal_strings);
    g_test_add_func("/str-hash/spread", test_spread);
    g_test_add_func("/str-hash/length-counts", test_length_counts);
    return g_test_run();
}

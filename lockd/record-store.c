/* Holder records as files <tag>.holder in one directory (the fcntl
 * lockspace, or sanlock's shared lease directory), rewritten in place. */
#include "record-store.h"
#include "vml-error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECORD_SUFFIX ".holder"
#define RECORD_MAX (64 * 1024 * 1024)

struct _VmlRecord {
    int fd;
    char *name;
    gsize len;      /* bytes in the file: shorter writes pad with spaces */
    gsize reserved; /* room allocated (fallocate): writes below it cannot
                       run out of space */
};

/* Room for [0, END) before a write reaches there, a page ahead so that a
 * record growing a slot at a time asks seldom. FALSE (errno) if there is
 * none; a file system without fallocate has nothing to reserve. */
static gboolean
reserve_room(VmlRecord *r, gsize end)
{
    if (end <= r->reserved)
        return TRUE;
    gsize want = (end + 4096) & ~(gsize)4095;
    /* Short of the page ahead, what this write needs may still fit. */
    if (fallocate(r->fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)want) < 0 &&
        (errno != ENOSPC || fallocate(r->fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)(want = end)) < 0))
        return errno == EOPNOTSUPP;
    r->reserved = want;
    return TRUE;
}

gboolean
vml_record_store_init(VmlRecordStore *rd, const char *dir, GError **error)
{
    if (g_mkdir_with_parents(dir, 0700) < 0 ||
        (rd->dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot open %s: %s", dir,
                    g_strerror(errno));
        return FALSE;
    }
    rd->dir = g_strdup(dir);
    return TRUE;
}

void
vml_record_store_clear(VmlRecordStore *rd)
{
    g_clear_pointer(&rd->names, g_ptr_array_unref);
    if (rd->dir) {
        close(rd->dirfd);
        g_clear_pointer(&rd->dir, g_free);
    }
}

VmlRecord *
vml_record_store_open(VmlRecordStore *be, const char *tag, GError **error)
{
    g_autofree char *name = g_strconcat(tag, RECORD_SUFFIX, NULL);
    int fd = openat(be->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot open holder record %s/%s: %s",
                    be->dir, name, g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    VmlRecord *r = g_new0(VmlRecord, 1);
    r->fd = fd;
    r->name = g_steal_pointer(&name);
    r->len = st.st_size;
    return r;
}

/* One pwrite, padded with spaces (harmless after JSON) over a longer old
 * content; the file is only cut when it would shrink a lot. Readers that
 * catch a write half-way retry. */
gboolean
vml_record_store_write(VmlRecordStore *be, VmlRecord *r, const char *data, gsize len,
                     GError **error)
{
    gsize total = len;
    g_autofree char *padded = NULL;

    /* Spaces over all of the old content, even when the file is cut
     * afterwards: a crash before the cut leaves JSON and blanks, never
     * the new text followed by the old one's tail. */
    if (len < r->len) {
        padded = g_malloc(r->len);
        memcpy(padded, data, len);
        memset(padded + len, ' ', r->len - len);
        data = padded;
        total = r->len;
    }
    /* Room first: a write cut short by a full disk would leave a record
     * that parses as nothing, and its holder unknown after a crash. */
    if (total > r->len && !reserve_room(r, total)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot grow holder record %s/%s: %s",
                    be->dir, r->name, g_strerror(errno));
        return FALSE;
    }
    gsize keep = len < r->len && len * 2 >= r->len ? r->len : len;
    ssize_t n = pwrite(r->fd, data, total, 0);
    if (n != (ssize_t)total || (keep < total && ftruncate(r->fd, keep) < 0)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot write holder record %s/%s: %s",
                    be->dir, r->name, n >= 0 && n < (ssize_t)total ? "short write"
                                                                 : g_strerror(errno));
        return FALSE;
    }
    r->len = keep;
    if (keep < total)
        r->reserved = MIN(r->reserved, keep);   /* the cut freed what lay past it */
    return TRUE;
}

gboolean
vml_record_store_patch(VmlRecordStore *be, VmlRecord *r, gsize off, const char *data, gsize len,
                     GError **error)
{
    gsize end = off + len;
    if (end > r->len && !reserve_room(r, end)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot grow holder record %s/%s: %s",
                    be->dir, r->name, g_strerror(errno));
        return FALSE;
    }
    ssize_t n = pwrite(r->fd, data, len, (off_t)off);
    if (n != (ssize_t)len) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot write holder record %s/%s: %s",
                    be->dir, r->name, n >= 0 ? "short write" : g_strerror(errno));
        return FALSE;
    }
    r->len = MAX(r->len, end);
    return TRUE;
}

void
vml_record_store_close(VmlRecordStore *be, VmlRecord *r, gboolean remove)
{
    if (remove)
        unlinkat(be->dirfd, r->name, 0);
    close(r->fd);
    g_free(r->name);
    g_free(r);
}

static GBytes *
read_record(VmlRecordStore *be, const char *name)
{
    int fd = openat(be->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > RECORD_MAX) {
        close(fd);
        return NULL;
    }
    /* Records are rewritten in place: a read that overlaps a write can
     * see half of each. Two reads in a row that agree are not torn. */
    gsize size = st.st_size;
    g_autofree char *buf = g_malloc(size + 1), *again = g_malloc(size + 1);
    ssize_t n = pread(fd, buf, size, 0);
    for (int i = 0; n > 0 && i < 5; i++) {
        ssize_t m = pread(fd, again, size, 0);
        if (m == n && memcmp(buf, again, n) == 0)
            break;
        char *t = buf;
        buf = again;
        again = t;
        n = m;
    }
    close(fd);
    if (n <= 0)
        return NULL;
    return g_bytes_new_take(g_steal_pointer(&buf), n);
}

/* The names of the records in the directory: listed again only when its
 * mtime moved. A change in the same clock tick as the last listing would
 * leave the mtime as it was, so a listing is only kept when the mtime it
 * saw was older than that listing by far more than a tick. */
static GPtrArray *
record_names(VmlRecordStore *be, GError **error)
{
    struct stat st;
    struct timespec now;
    if (fstat(be->dirfd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot read holder records in %s: %s", be->dir, g_strerror(errno));
        return NULL;
    }
    if (be->names && st.st_mtim.tv_sec == be->names_mtime.tv_sec &&
        st.st_mtim.tv_nsec == be->names_mtime.tv_nsec)
        return g_ptr_array_ref(be->names);
    clock_gettime(CLOCK_REALTIME, &now);
    int dfd = openat(be->dirfd, ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot read holder records in %s: %s", be->dir, g_strerror(errno));
        return NULL;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    for (struct dirent *e; (e = readdir(d));) {
        if (g_str_has_suffix(e->d_name, RECORD_SUFFIX))
            g_ptr_array_add(names, g_strdup(e->d_name));
    }
    closedir(d);
    g_clear_pointer(&be->names, g_ptr_array_unref);
    gint64 age_ns = (gint64)(now.tv_sec - st.st_mtim.tv_sec) * 1000000000 +
                    (now.tv_nsec - st.st_mtim.tv_nsec);
    if (age_ns > 100 * 1000000) {
        be->names = g_ptr_array_ref(names);
        be->names_mtime = st.st_mtim;
    }
    return names;
}

GPtrArray *
vml_record_store_all(VmlRecordStore *be, GHashTable *skip, GError **error)
{
    g_autoptr(GPtrArray) names = record_names(be, error);
    if (!names)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        if (skip) {
            g_autofree char *tag = g_strndup(name, strlen(name) - strlen(RECORD_SUFFIX));
            if (g_hash_table_contains(skip, tag))
                continue;
        }
        GBytes *b = read_record(be, name);
        if (b)
            g_ptr_array_add(out, b);
    }
    return out;
}

void
vml_record_store_remove(VmlRecordStore *be, const char *tag)
{
    g_autofree char *name = g_strconcat(tag, RECORD_SUFFIX, NULL);
    unlinkat(be->dirfd, name, 0);
}

/*
 * fileutil.c: whole-file reads with a size limit and atomic whole-file writes.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lavinia/error.h"

/* Write n bytes to path through PATH.tmp-XXXXXX in the same directory: a crash leaves either
 * the old file or the new one, never half of either. */
int lv_write_atomic(const char *path, const void *buf, size_t n)

{
    const char *data = buf;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp-XXXXXX");
    int fd = -1, rc;
    if (!tmp)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = lv_error_status(LV_EIO, "%s: cannot write %s: %s", path, tmp,
                                 w < 0 ? strerror(errno) : "no progress");
            goto fail;
        }
        done += (size_t)w;
    }
    /* mkstemp makes the file 0600; these are ordinary readable files */
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot sync %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = lv_error_status(LV_EIO, "%s: cannot close %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot rename %s over it: %s", path, tmp,
                             strerror(errno));
        goto fail;
    }
    free(tmp);
    return LV_OK;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return rc;
}

int lv_read_file(const char *path, size_t max, char **out, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lv_error_status(LV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = LV_OK;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = lv_error("%s: is a directory, not a file", path);
    } else if (!S_ISREG(st.st_mode)) {
        rc = lv_error("%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > max) {
        rc = lv_error("%s: %lld bytes is too large for this file (at most %zu)", path,
                      (long long)st.st_size, max);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    } else {
        size_t got = 0, want = (size_t)st.st_size;
        while (got < want) {
            ssize_t r = read(fd, buf + got, want - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                rc = lv_error_status(LV_EIO, "%s: cannot read: %s", path,
                                     r < 0 ? strerror(errno) : "file shrank while read");
                break;
            }
            got += (size_t)r;
        }
        buf[got] = 0;
        *n = got;
    }
    close(fd);
    if (rc != LV_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return LV_OK;
}

int lv_map_file(const char *path, uint64_t max, void **map, size_t *size)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return lv_error_status(LV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = LV_OK;
    if (fstat(fd, &st) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = lv_error("%s: is a directory, not a file", path);
    } else if (!S_ISREG(st.st_mode)) {
        rc = lv_error("%s: not a regular file", path);
    } else if (st.st_size == 0) {
        rc = lv_error("%s: empty file", path);
    } else if ((uint64_t)st.st_size > max || (uint64_t)st.st_size > SIZE_MAX) {
        rc = lv_error("%s: file of %lld bytes is larger than the %" PRIu64 "-byte limit", path,
                      (long long)st.st_size, max);
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = lv_error_status(LV_EIO, "%s: cannot map %lld bytes: %s", path,
                                 (long long)st.st_size, strerror(errno));
        } else {
            *map = m;
            *size = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

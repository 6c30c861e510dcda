/*
 * fileutil.h (internal): whole-file reads with a size limit and atomic whole-file writes.
 *
 * Writers of small files (config.json, a safetensors index, copied tokenizer files) go through
 * lv_write_atomic so a crash or a full disk leaves the old file or the new one, never half.
 */
#ifndef LV_IO_FILEUTIL_H
#define LV_IO_FILEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Write n bytes to path through PATH.tmp-XXXXXX in the same directory (mode 0644, fsync,
 * rename over path). On failure path is untouched and the temporary file removed. */
int lv_write_atomic(const char *path, const void *data, size_t n);

/* Read all of path (a regular file of at most max bytes) into a malloc'd buffer with a NUL
 * after the last byte (not counted in *n). Messages name the file. */
int lv_read_file(const char *path, size_t max, char **out, size_t *n);

/* Map all of path read-only (a regular, non-empty file of at most max bytes) into *map and
 * *size; release with munmap. Messages name the file. */
int lv_map_file(const char *path, uint64_t max, void **map, size_t *size);

#endif /* LV_IO_FILEUTIL_H */

/* SPDX-License-Identifier: MIT */
/*
 * Internal to the file stages (fd.c) and their tests. Not installed.
 */
#ifndef SLUICE_FD_INT_H
#define SLUICE_FD_INT_H

#include <stdbool.h>

/* Nonzero: the atomic file sink makes a named temporary even where the
 * file system offers unnamed ones (O_TMPFILE), as it does where it does
 * not. For the tests of that fallback; read by sl_file_sink_new on the
 * caller's thread. */
extern bool sl__fd_no_tmpfile;

#endif /* SLUICE_FD_INT_H */

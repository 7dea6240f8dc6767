/* SPDX-License-Identifier: MIT */
/*
 * gzip — compress or decompress a file through a sluice pipeline.
 *
 *     fs.createReadStream(in).pipe(zlib.createGzip()).pipe(out)
 *
 * on three threads: a source reads the input file, sl_gzip (or sl_gunzip
 * with -d) runs zlib, a sink writes the output file. A slow disk pauses
 * the compressor, which pauses the reader; a small file that inflates to
 * gigabytes is paused the same way, so memory stays bounded whatever the
 * input.
 *
 * Compressing a named file stores its name and modification time in the
 * gzip header, as gzip(1) does (-n leaves them out). Decompressing reads
 * every member of the input; -v then prints the first member's header.
 * The output goes to a temporary file next to OUT, renamed over OUT only
 * when the whole pipeline succeeded: on any error OUT is left as it was.
 *
 * Usage: gzip [-d] [-l LEVEL] [-n] [-v] IN OUT
 *        gzip [-d] [-l LEVEL] [-n] [-v] -c IN
 *   -d        decompress
 *   -l LEVEL  compression level, 0 (store) to 9 (smallest); default 6
 *   -n        do not store the input's name and time in the header
 *   -v        after decompressing, print the gzip header to stderr
 *   -c        write to standard output
 *   IN, OUT   file names; "-" is standard input / output
 * Exit status: 0 on success, 1 on error, 2 on bad usage.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getopt, mkstemp, fchmod */
#endif

#include <sluice/zlib.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the file stages: read(2) and write(2) ---------------------------- */

struct fd_ctx {
  int fd;
};

/* One read(2) into a full pooled buffer, one push: sl_stage_push waits
 * while the compressor's input ring is full. */
static int file_read(sl_stage *stage, void *ctx) {
  struct fd_ctx *c = ctx;
  sl_buf *b;
  ssize_t n;
  int rc = sl_stage_buf(stage, 0, &b);
  if (rc != 0)
    return rc;
  do
    n = read(c->fd, sl_buf_data(b), sl_buf_cap(b));
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    int e = errno;
    sl_buf_unref(b);
    if (n == 0)
      return SL_EOF;
    sl_stage_set_error(stage, "read: %s", strerror(e));
    return sl_err_from_errno(e);
  }
  sl_buf_set_len(b, (size_t)n);
  return sl_stage_push(stage, b);
}

/* Write every byte of the chunk, however many calls it takes. */
static int file_write(sl_stage *stage, void *ctx, sl_buf *in) {
  struct fd_ctx *c = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  int rc = 0;
  while (left > 0) {
    ssize_t n = write(c->fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      sl_stage_set_error(stage, "write: %s", strerror(e));
      rc = sl_err_from_errno(e);
      break;
    }
    p += n;
    left -= (size_t)n;
  }
  sl_buf_unref(in);
  return rc;
}

/* ---- main --------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: gzip [-d] [-l LEVEL] [-n] [-v] IN OUT\n"
                  "       gzip [-d] [-l LEVEL] [-n] [-v] -c IN\n");
}

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static void print_header(sl_stage *gunzip) {
  sl_gzip_header h;
  if (sl_gzip_header_get(gunzip, &h) != 0)
    return;
  fprintf(stderr, "name:    %s%s\n", h.name ? h.name : "(none)",
          h.truncated & SL_GZIP_FNAME ? " (truncated)" : "");
  if (h.comment)
    fprintf(stderr, "comment: %s\n", h.comment);
  fprintf(stderr, "mtime:   %lu\n", (unsigned long)h.mtime);
  fprintf(stderr, "os:      %u\nxfl:     %u\n", h.os, h.xfl);
  fprintf(stderr, "extra:   %zu bytes\nhcrc:    %s\n", h.extra_len,
          h.hcrc ? "yes" : "no");
  fprintf(stderr, "members: %llu\n", (unsigned long long)h.members);
}

int main(int argc, char **argv) {
  static const sl_stage_ops src_ops = {.read = file_read};
  static const sl_stage_ops sink_ops = {.write = file_write};
  struct fd_ctx in = {-1}, out = {-1};
  const char *in_path, *out_path = NULL;
  char *tmp_path = NULL;
  int decompress = 0, level = SL_ZLIB_LEVEL_DEFAULT, no_name = 0;
  int verbose = 0, to_stdout = 0, opt, rc, status = 1;
  sl_zlib_opts zopts;
  sl_gzip_header header;
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *z = NULL, *sink = NULL;

  while ((opt = getopt(argc, argv, "dl:nvc")) != -1) {
    switch (opt) {
    case 'd':
      decompress = 1;
      break;
    case 'l':
      if (optarg[0] < '0' || optarg[0] > '9' || optarg[1] != '\0') {
        usage();
        return 2;
      }
      level = optarg[0] - '0';
      break;
    case 'n':
      no_name = 1;
      break;
    case 'v':
      verbose = 1;
      break;
    case 'c':
      to_stdout = 1;
      break;
    default:
      usage();
      return 2;
    }
  }
  if (argc - optind != (to_stdout ? 1 : 2)) {
    usage();
    return 2;
  }
  in_path = argv[optind];
  if (!to_stdout && strcmp(argv[optind + 1], "-") != 0)
    out_path = argv[optind + 1];

  /* The library never touches signals: a reader going away must be an
   * EPIPE error from write(2), not a dead process. */
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    perror("gzip: signal");
    return 1;
  }

  sl_zlib_opts_init(&zopts);
  zopts.level = level;
  memset(&header, 0, sizeof header);

  if (strcmp(in_path, "-") == 0) {
    in.fd = STDIN_FILENO;
  } else {
    struct stat st;
    in.fd = open(in_path, O_RDONLY);
    if (in.fd < 0 || fstat(in.fd, &st) != 0) {
      fprintf(stderr, "gzip: %s: %s\n", in_path, strerror(errno));
      goto out;
    }
    if (!decompress && !no_name) { /* what gzip(1) stores by default */
      header.name = base_name(in_path);
      header.mtime = (uint32_t)st.st_mtime;
      zopts.header = &header; /* copied by sl_gzip_new */
    }
  }

  if (out_path == NULL) {
    out.fd = STDOUT_FILENO;
  } else {
    /* A temporary in OUT's directory, renamed over OUT on success. */
    size_t n = strlen(out_path);
    mode_t mask = umask(0);
    umask(mask);
    tmp_path = malloc(n + sizeof ".XXXXXX");
    if (tmp_path == NULL) {
      fprintf(stderr, "gzip: out of memory\n");
      goto out;
    }
    memcpy(tmp_path, out_path, n);
    memcpy(tmp_path + n, ".XXXXXX", sizeof ".XXXXXX");
    out.fd = mkstemp(tmp_path);
    if (out.fd < 0 || fchmod(out.fd, 0666 & ~mask) != 0) {
      fprintf(stderr, "gzip: %s: %s\n", tmp_path, strerror(errno));
      if (out.fd >= 0)
        unlink(tmp_path);
      free(tmp_path);
      tmp_path = NULL;
      goto out;
    }
  }

  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = sl_stage_new(&src, "read", &src_ops, &in)) != 0 ||
      (rc = decompress ? sl_gunzip_new(&z, &zopts) : sl_gzip_new(&z, &zopts)) !=
          0 ||
      (rc = sl_stage_new(&sink, "write", &sink_ops, &out)) != 0 ||
      (rc = sl_pipeline_chain(p, src, z, sink, NULL)) != 0) {
    /* Until chain succeeds the stages are ours to free. */
    sl_stage_free(src);
    sl_stage_free(z);
    sl_stage_free(sink);
    fprintf(stderr, "gzip: %s\n", sl_strerror(rc));
    goto out;
  }

  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "gzip: %s\n", msg ? msg : sl_strerror(rc));
    goto out;
  }
  if (decompress && verbose)
    print_header(z); /* valid until sl_pipeline_free */
  if (tmp_path != NULL) {
    if (close(out.fd) != 0) { /* gzip(1) does not fsync either */
      out.fd = -1;
      fprintf(stderr, "gzip: %s: %s\n", tmp_path, strerror(errno));
      goto out;
    }
    out.fd = -1;
    if (rename(tmp_path, out_path) != 0) {
      fprintf(stderr, "gzip: %s: %s\n", out_path, strerror(errno));
      goto out;
    }
    free(tmp_path);
    tmp_path = NULL;
  }
  status = 0;

out:
  sl_pipeline_free(p);    /* joins the threads; frees the stages */
  if (tmp_path != NULL) { /* failed: OUT is left as it was */
    unlink(tmp_path);
    free(tmp_path);
  }
  if (out.fd > STDERR_FILENO)
    close(out.fd);
  if (in.fd > STDERR_FILENO)
    close(in.fd);
  return status;
}

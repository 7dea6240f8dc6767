/* SPDX-License-Identifier: MIT */
/*
 * sluice/fd.h — stages that read and write file descriptors and files.
 *
 * Four constructors make ready-to-chain stages:
 *
 *   sl_fd_source_new    reads any descriptor: a file, a pipe, a socket, a
 *                       terminal; Node's fs.createReadStream(null, {fd})
 *   sl_fd_sink_new      writes any descriptor; Node's
 *                       fs.createWriteStream(null, {fd})
 *   sl_file_source_new  opens a path and reads it
 *   sl_file_sink_new    writes a path, by default atomically: the bytes go
 *                       to a temporary beside the target, which replaces
 *                       the target only when the whole stream was written
 *
 * What they take care of, so that an application does not have to:
 *
 *   Short writes     a write(2) that takes fewer bytes than asked is
 *                    continued until the chunk is out.
 *   EINTR            every interrupted call is retried. (Stage threads
 *                    block asynchronous signals, so it is rare.)
 *   EAGAIN           on a non-blocking descriptor the stage waits in
 *                    poll(2) until it is ready, then retries; the wait
 *                    also watches the pipeline's cancel descriptor
 *                    (sl_stage_cancel_fd), so it ends with SL_ECANCELED
 *                    when the pipeline is cancelled or fails.
 *   EPIPE            writing to a pipe or socket whose reader has gone is
 *                    the error SL_EPIPE, never a SIGPIPE that kills the
 *                    process, whatever the application's disposition of
 *                    SIGPIPE. Sockets are written with send(MSG_NOSIGNAL).
 *                    Pipes are written with write(2) on the stage thread,
 *                    which blocks every asynchronous signal: the SIGPIPE
 *                    the kernel directs at that thread stays pending there,
 *                    write(2) returns EPIPE, and the stage takes the
 *                    pending signal back at once (sigtimedwait with a zero
 *                    timeout) so that it is never delivered later. No
 *                    signal handler is installed and no process-wide
 *                    signal state is changed.
 *   Cancellation     a source reading a pipe, socket or terminal waits in
 *                    poll(2) on its descriptor and on the cancel
 *                    descriptor, so sl_pipeline_cancel (or another stage's
 *                    failure) wakes a source blocked on an idle pipe and
 *                    it ends with SL_ECANCELED. Regular files are always
 *                    readable and are read without poll.
 *
 * One limit, set by the kernel: a sink writing a *blocking* pipe or socket
 * whose reader has stopped reading (without closing) sits in write(2) and
 * cannot be woken by a cancel. Give the sink a descriptor with O_NONBLOCK
 * set when it must stay cancellable in that case: it then waits in poll(2)
 * with the cancel descriptor, as a source does. (The file sink opens FIFOs
 * and devices non-blocking for this reason.)
 *
 * Errors. An op that fails returns an SL_E* code (sl_err_from_errno of the
 * errno: SL_ENOSPC, SL_EPIPE, SL_EIO for an errno sluice has no name for)
 * and explains it with sl_stage_set_error, so that sl_pipeline_error reads
 * like "file-sink: write out.gz: No space left on device" or
 * "fd-source: read fd 5: Connection reset by peer".
 *
 * Constructors open what they open at once, so that a missing file or a
 * forbidden directory is reported by the call that names it, before any
 * thread starts. A stage does not exist yet then, so there is no message:
 * a constructor returns the code and leaves errno as the failing system
 * call set it, for a caller that wants the precise reason (strerror).
 *
 * Threads. Constructors and sl_fd_bytes may be called from any thread. The
 * ops run on the stage's thread; the progress callback runs there too,
 * with no lock of the library held. A stage from these constructors is an
 * ordinary stage: chain it, start, wait and free the pipeline as usual
 * (sl_stage_free before it is chained).
 *
 * Every descriptor the stages open is close-on-exec.
 */
/* The umbrella first, outside the guard: whichever header a program
 * includes first, every sub-header is read after the core and in the
 * umbrella's order, so each finds the types it uses. */
#include <sluice.h>

#ifndef SLUICE_FD_H
#define SLUICE_FD_H

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for sl_fd_opts.flags. Each constructor lists those it accepts; any
 * other bit is SL_EINVAL. */
enum sl_fd_flags {
  /* sl_fd_source_new, sl_fd_sink_new: the stage owns the descriptor from a
   * successful call on. A source closes it when the stage is destroyed; a
   * sink closes it in its final op at the end of the stream, reporting a
   * failed close(2) (a delayed write error on some file systems) as the
   * stage's error, or when destroyed if the stream never ended. Without
   * it the descriptor stays the caller's and is never closed. */
  SL_FD_CLOSE = 1 << 0,

  /* sl_file_sink_new: replace a file that exists at the path. Without it
   * an existing file (or anything else at the name but a device or FIFO)
   * makes the constructor return SL_EEXIST, and an atomic sink that finds
   * a file put there while it ran fails with SL_EEXIST at the end and
   * leaves that file alone. */
  SL_FILE_OVERWRITE = 1 << 1,

  /* sl_file_sink_new: write the target itself instead of a temporary
   * (created, or truncated with SL_FILE_OVERWRITE, by the constructor).
   * Faster to set up and works where no other file may be created beside
   * the target, but a failed or cancelled stream leaves a partial file. */
  SL_FILE_IN_PLACE = 1 << 2
};

/* The size argument of a progress callback when the total is unknown (a
 * pipe, a socket, any sink). */
#define SL_FD_SIZE_UNKNOWN UINT64_MAX

/* A progress report: bytes read (source) or written (sink) so far, and the
 * total to expect: a regular file's size when the source opened it, else
 * SL_FD_SIZE_UNKNOWN. (A file that grows or shrinks while it is read can
 * end past or short of that total.) Called on the stage's thread after
 * every chunk, with no lock of the library held; it runs in the stage's
 * time, so it should be quick (rate-limit any printing). It may call
 * sl_pipeline_cancel, but not sl_pipeline_wait or sl_pipeline_free. */
typedef void (*sl_fd_progress_fn)(sl_stage *stage, uint64_t bytes,
                                  uint64_t total, void *arg);

/* sl_file_sink_new's hook at the end of a stream that went well: fd is the
 * descriptor of the file written, every byte of the stream in it, and the
 * file does not have its name yet (atomic sink) or is about to be closed
 * (SL_FILE_IN_PLACE). It is the moment to give the file its metadata
 * through the descriptor (fchown, fchmod, futimens: after the last write,
 * which would move the times, and before anyone can open it by its name).
 * Called once, on the stage's thread, with no lock of the library held;
 * fd stays the stage's (do not close it). Return 0, or a negative SL_E*
 * code to fail the stream (explain it with sl_stage_set_error): the
 * temporary is then removed and the target left as it was. */
typedef int (*sl_file_commit_fn)(sl_stage *stage, int fd, void *arg);

/* Options of the four constructors. Zero-initialise and set what you need;
 * NULL options mean all zero. Each field names who reads it; the others
 * ignore it. */
typedef struct sl_fd_opts {
  /* The stage's name (copied), shown in errors, statistics and the thread
   * name. NULL picks "fd-source", "fd-sink", "file-source" or
   * "file-sink". An empty name is SL_EINVAL. */
  const char *name;

  /* Sources: the most bytes read per read(2), i.e. per chunk. 0 asks for
   * the pipeline's buffer size (sl_pipeline_opts.buf_size), which is what
   * the pool recycles; a larger size works but allocates every chunk. */
  size_t chunk_size;

  /* Bitwise or of enum sl_fd_flags. */
  unsigned flags;

  /* sl_file_sink_new: the permission bits (at most 07777) of a new file,
   * filtered by the process's umask as open(2) does. 0 picks 0666, so a
   * new file gets 0666 & ~umask. When an existing file is replaced
   * (SL_FILE_OVERWRITE) and mode is 0, the new file keeps the old one's
   * permission bits (0777, without set-id and sticky bits); its owner is
   * the caller, as for any file the process creates. */
  unsigned mode;

  /* All four: called after every chunk read or written (see
   * sl_fd_progress_fn). NULL for none. */
  sl_fd_progress_fn progress;
  void *progress_arg;

  /* sl_file_sink_new: called with the file's descriptor once the whole
   * stream is in it (see sl_file_commit_fn); not called for a device or
   * FIFO at the path. NULL for none. */
  sl_file_commit_fn commit;
  void *commit_arg;
} sl_fd_opts;

/* A source reading fd until end of file: one read(2) of at most
 * opts->chunk_size bytes into a pooled buffer per call of its read op, the
 * bytes pushed as one chunk; end of file (read returns 0) ends the stream.
 * A regular file or block device is read straight away; anything else is
 * polled first, with the cancel descriptor, so that the source can be
 * cancelled while it waits for data (see the top of this header). A
 * non-blocking descriptor works the same way.
 *
 * fd is read from its current offset, which moves (the file description is
 * shared with any dup of it). With SL_FD_CLOSE the stage owns fd on
 * success; without it the caller must keep fd open until the pipeline has
 * been waited for, then close it. On failure fd is untouched and still the
 * caller's, whatever the flags.
 *
 * Accepted flags: SL_FD_CLOSE. On success *out owns the new stage (see
 * sl_stage_new). Returns 0; SL_EINVAL (out NULL, fd negative, an empty
 * name, a flag not accepted); SL_EBADF (fd is not open; errno EBADF);
 * SL_ENOMEM. On failure *out is NULL. Any thread. */
SL_EXTERN int sl_fd_source_new(sl_stage **out, int fd, const sl_fd_opts *opts);

/* A sink writing every byte of every chunk to fd, in order: short writes
 * are continued, EINTR retried, EAGAIN on a non-blocking descriptor waited
 * out in poll(2) with the cancel descriptor, a socket written with
 * send(MSG_NOSIGNAL), EPIPE reported as SL_EPIPE without a signal.
 *
 * A flush marker (sl_stage_push_flush upstream) makes the sink's sync op
 * run: the sink holds nothing back, so for a pipe, socket or terminal it
 * has nothing to do; for a regular file or block device it calls
 * fdatasync(2), so that what came before the marker is on stable storage
 * (EINVAL or ESPIPE from fdatasync, descriptors that cannot sync, are not
 * errors). At the end of the stream the sink does nothing more, unless it
 * owns fd (SL_FD_CLOSE), which it then closes, reporting a failed close.
 *
 * Ownership of fd and the return values are those of sl_fd_source_new.
 * Accepted flags: SL_FD_CLOSE. Any thread. */
SL_EXTERN int sl_fd_sink_new(sl_stage **out, int fd, const sl_fd_opts *opts);

/* A source reading the file at path (opened read-only, close-on-exec, no
 * controlling terminal; a FIFO is opened without waiting for a writer).
 * It reads as sl_fd_source_new does and owns the descriptor, which is
 * closed when the stage is destroyed. A regular file's size at open is the
 * total given to the progress callback.
 *
 * path is copied. No flag is accepted. On success *out owns the stage.
 * Returns 0; SL_EINVAL (out or path NULL, path empty, an empty name, any
 * flag); SL_ENOMEM; otherwise the open failed and the return is
 * sl_err_from_errno(errno) with errno left as open(2) set it: SL_ENOENT,
 * SL_EACCES, SL_EISDIR, SL_EIO for any errno without an
 * SL_ code. On failure *out is NULL and nothing was left open. Any
 * thread. */
SL_EXTERN int sl_file_source_new(sl_stage **out, const char *path,
                                 const sl_fd_opts *opts);

/* A sink writing the file at path (copied), as sl_fd_sink_new writes a
 * descriptor, flush markers included (fdatasync).
 *
 * Atomic by default. The constructor creates a temporary in the target's
 * directory, with the mode of opts->mode: where the kernel and the file
 * system allow it (Linux's O_TMPFILE, with /proc mounted), a file without
 * a name, which nothing can leave behind: not a failure, not SIGKILL, not
 * a power cut; elsewhere a file named ".<name>.XXXXXX" (six random
 * characters). The stream is written there; at its end the final op calls
 * opts->commit, fsyncs the temporary and puts it in the target's place
 * (atomically: a reader sees the old file or the whole new one, never a
 * part): an unnamed one is linked at the target (linkat), or, to replace
 * a file, linked under a ".<name>.XXXXXX" name and renamed over it; a
 * named one is renamed over the target. Then it fsyncs the directory, so
 * the new name survives a crash. When the stream fails or is cancelled,
 * or the stage is freed without having run, the temporary is removed
 * when the stage is destroyed (sl_pipeline_free or sl_stage_free), and
 * the target is as it was: absent, or the old file untouched. (A process
 * killed outright leaves a named temporary behind, and an unnamed one
 * only in the instant between its link and its rename over a file it
 * replaces.) The target is in place exactly when the stage's final
 * succeeded, i.e. sl_stage_status(stage) is 0 after sl_pipeline_wait (a
 * failure of the directory fsync, after the rename, is reported as the
 * stage's error although the file is in place). A symbolic link at the
 * target is replaced, not followed.
 *
 * An existing file at path makes the constructor return SL_EEXIST, unless
 * SL_FILE_OVERWRITE is given. With SL_FILE_IN_PLACE the target itself is
 * opened (created, or truncated) by the constructor and written directly:
 * no temporary, no rename, and a failed stream leaves what was written.
 *
 * A device or FIFO at path (/dev/null, /dev/full, a named pipe) is never
 * replaced: it is opened for writing, non-blocking (a FIFO must have a
 * reader: otherwise the constructor fails with errno ENXIO), and written in
 * place, whatever the flags; SL_EEXIST does not apply.
 *
 * Accepted flags: SL_FILE_OVERWRITE, SL_FILE_IN_PLACE. On success *out
 * owns the stage. Returns 0; SL_EINVAL (out or path NULL, path empty or
 * ending in '/', an empty name, a flag not accepted, mode above 07777);
 * SL_EEXIST (see above; errno EEXIST); SL_ENOMEM; otherwise a system call
 * failed and the return is sl_err_from_errno(errno) with errno left as it
 * set it: SL_ENOENT (no such directory), SL_EACCES (the directory is not
 * writable), SL_EISDIR, SL_EIO for any other errno
 * without an SL_ code. On failure *out is NULL, nothing is left open and
 * no temporary is left behind. Any thread. */
SL_EXTERN int sl_file_sink_new(sl_stage **out, const char *path,
                               const sl_fd_opts *opts);

/* Bytes read (a source) or written (a sink) so far by a stage made by one
 * of the constructors above. Any thread, at any moment; exact once the
 * pipeline has been waited for. 0 for NULL or any other stage. */
SL_EXTERN uint64_t sl_fd_bytes(const sl_stage *stage);

/* ------------------------------------------------------------------------
 * The socket stage: both directions of one connected stream socket
 *
 * A duplex stage (Node's net.Socket): its read side is a source that
 * receives from the socket, its write side a sink that sends to it, each on
 * its own thread and each with its own backpressure. A slow reader at the
 * far end stops the write side (it waits in poll for room) and, through
 * the rings, whatever feeds it; a fast sender at the far end is paused by
 * the read side's output ring, and then by the kernel's window. Neither
 * direction waits for the other, so a pipeline may start and end at the
 * same socket:
 *
 *   sl_socket_new(&sock, "client", fd, NULL);
 *   sl_gzip_new(&gz, NULL);
 *   sl_pipeline_chain(p, sock, gz, NULL);   the request body ...
 *   sl_pipeline_link(p, gz, sock);          ... comes back compressed
 *
 * Read side. One recv(2) into a pooled buffer per call, pushed as one
 * chunk; an orderly shutdown by the peer (recv returns 0) ends the stream.
 * It waits for data in poll(2) together with the cancel descriptor, so a
 * cancel or another stage's failure ends an idle read at once.
 *
 * Write side. Every byte of every chunk is sent with send(MSG_NOSIGNAL):
 * short sends are continued, EINTR retried, a full send buffer waited out
 * in poll(2) with the cancel descriptor (so a peer that stops reading never
 * makes the stage uncancellable); a peer that has gone is the error
 * SL_EPIPE (or "connection reset", SL_EIO), never a SIGPIPE. At the end of
 * its input the write side half-closes the socket (shutdown(SHUT_WR)): the
 * peer reads end of file after the whole response, and the read side
 * carries on reading until the peer ends too.
 *
 * Both sides use non-blocking calls (MSG_DONTWAIT), whatever O_NONBLOCK
 * says, so the descriptor may be blocking or not. It must be a connected
 * SOCK_STREAM socket: TCP, AF_UNIX, or a socketpair.
 * ---------------------------------------------------------------------- */

/* Flags for sl_socket_opts.flags. */
enum sl_socket_flags {
  /* The stage owns the socket from a successful call on and closes it when
   * the stage is destroyed (sl_pipeline_free), after both sides ended.
   * Without it the caller keeps it and must keep it open until the
   * pipeline has been waited for. */
  SL_SOCKET_CLOSE = 1 << 0,

  /* Do not half-close at the end of the write side's input: the socket
   * stays open for writing (the caller shuts it down or closes it). */
  SL_SOCKET_NO_SHUTDOWN = 1 << 1
};

/* Options of sl_socket_new. Zero-initialise and set what you need; NULL
 * means all zero. */
typedef struct sl_socket_opts {
  /* The most bytes received per recv(2), i.e. per chunk. 0 asks for the
   * pipeline's buffer size, which is what the pool recycles. */
  size_t chunk_size;

  /* Bitwise or of enum sl_socket_flags; any other bit is SL_EINVAL. */
  unsigned flags;
} sl_socket_opts;

/* A duplex stage on the connected stream socket fd, named name (copied;
 * NULL picks "socket"). Link a producer to it for what is sent and link it
 * to a consumer for what is received; both links are required (a socket
 * used one way only is a job for sl_fd_source_new or sl_fd_sink_new).
 *
 * The stage's errors read "<name>: recv fd 7: Connection reset by peer",
 * "<name>: send fd 7: Broken pipe", "<name>: shutdown fd 7: ...".
 *
 * On success *out owns the stage (see sl_stage_new), and with
 * SL_SOCKET_CLOSE the socket. Returns 0; SL_EINVAL (out NULL, fd negative,
 * an empty name, an unknown flag, fd not a stream socket: errno ENOTSOCK
 * or EPROTOTYPE); SL_EBADF (fd not open); SL_ENOMEM. On failure *out is
 * NULL and fd is untouched and still the caller's. Any thread. */
SL_EXTERN int sl_socket_new(sl_stage **out, const char *name, int fd,
                            const sl_socket_opts *opts);

/* Bytes received (read side) and sent (write side) so far by a stage from
 * sl_socket_new; either pointer may be NULL. Any thread, at any moment;
 * exact once the pipeline has been waited for. Returns 0, or SL_EINVAL
 * (NULL stage or another kind of stage; the counts are then 0). */
SL_EXTERN int sl_socket_bytes(const sl_stage *stage, uint64_t *received,
                              uint64_t *sent);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_FD_H */

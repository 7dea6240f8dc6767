/* SPDX-License-Identifier: MIT */
/*
 * Status and error names and messages, generated from SL_ERRNO_MAP in the
 * public header so that the enum, the names and the messages cannot drift.
 */
#include "sluice-int.h"

const char *sl_strerror(int code) {
  switch (code) {
  case SL_OK:
    return "success";
  case SL_AGAIN:
    return "would block";
  case SL_EOF:
    return "end of stream";
  case SL_DONE:
    return "no more input wanted";
#define SL_XX_(name, value, msg) \
  case SL_##name:                \
    return msg;
    SL_ERRNO_MAP(SL_XX_)
#undef SL_XX_
  default:
    return "unknown error";
  }
}

const char *sl_err_name(int code) {
  switch (code) {
  case SL_OK:
    return "SL_OK";
  case SL_AGAIN:
    return "SL_AGAIN";
  case SL_EOF:
    return "SL_EOF";
  case SL_DONE:
    return "SL_DONE";
#define SL_XX_(name, value, msg) \
  case SL_##name:                \
    return "SL_" #name;
    SL_ERRNO_MAP(SL_XX_)
#undef SL_XX_
  default:
    return "SL_UNKNOWN";
  }
}

int sl_err_from_errno(int errnum) {
  switch (-errnum) {
#define SL_XX_(name, value, msg) \
  case SL_##name:                \
    return SL_##name;
    SL_ERRNO_MAP(SL_XX_)
#undef SL_XX_
  default:
    return SL_EIO;
  }
}

const char *sl_version(void) {
#define SL_STR2_(x) #x
#define SL_STR_(x) SL_STR2_(x)
  return SL_STR_(SL_VERSION_MAJOR) "." SL_STR_(SL_VERSION_MINOR) "." SL_STR_(
      SL_VERSION_PATCH);
}

unsigned sl_version_number(void) {
  return SL_VERSION_HEX;
}

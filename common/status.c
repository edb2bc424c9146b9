/* Error codes and qv_status. */
#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *qv_strerror(int code)
{
    int idx = code <= 0 ? -code : code;
    if (idx >= (int)(sizeof(code_names) / sizeof(code_names[0])))
        return "UNKNOWN";
    return code_names[idx];
}

int qv_from_errno(int err)
{
    switch (err) {
    case 0:
        return QV_OK;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case EDQUOT:
        return QV_ERESOURCE;
    case ENOENT:
        return QV_ENOTFOUND;
    case EEXIST:
        return QV_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return QV_EPERM;
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
        return QV_EINVAL;
    case ETIMEDOUT:
        return QV_ETIMEOUT;
    case EAGAIN:
    case ECONNREFUSED:
    case ECONNRESET:
    case EADDRINUSE:
    case EBUSY:
        return QV_EUNAVAIL;
    case ECANCELED:
    case EINTR:
        return QV_ECANCELLED;
    case ERANGE:
    case EOVERFLOW:
        return QV_ERANGE;
    case ENOSYS:
    case ENOTSUP:
        return QV_EUNIMPL;
    case EIO:
        return QV_EUNAVAIL;
    default:
        return QV_EUNKNOWN;
    }
}

qv_status qv_status_make(int code, const char *fmt, ...)
{
    qv_status s;
    s.code = code;
    s.msg[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s.msg, sizeof(s.msg), fmt, ap);
        va_end(ap);
    }
    return s;
}

qv_status qv_status_ok(void)
{
    qv_status s;
    s.code = QV_OK;
    s.msg[0] = '\0';
    return s;
}

/* err.c — text for the ERR_* codes of include/err.h. */
#include "err.h"

static const char *const err_msgs[] = {
#define ERR_MSG_(name, msg) msg,
    ERR_LIST(ERR_MSG_)
#undef ERR_MSG_
};

const char *err_str(int code)
{
    if (code < 0 || code >= ERR__COUNT) return "unknown error";
    return err_msgs[code];
}

/* Private to common/rpc: credentials shared by the server and the client. */
#ifndef QV_RPC_INTERNAL_H
#define QV_RPC_INTERNAL_H

#include "common/rpc/rpc.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

/* Deep copy of a TLS description (strings duplicated). Returns 0 or QV_ERESOURCE. */
int qv__rpc_tls_copy(qv_rpc_tls *dst, const qv_rpc_tls *src);

/* Credentials for a server / a channel; NULL on failure. Released by the caller with
 * grpc_server_credentials_release / grpc_channel_credentials_release. */
grpc_server_credentials *qv__rpc_server_creds(const qv_rpc_tls *tls);
grpc_channel_credentials *qv__rpc_channel_creds(const qv_rpc_tls *tls);

/* Sends gRPC core's own log lines through qv_log (once per process), so --log-format json and
 * --log-level hold for them too. */
void qv__rpc_route_grpc_logs(void);

#endif

/* TLS material: loading PEM files and turning them into gRPC credentials. */
#define _GNU_SOURCE
#include "common/rpc/rpc_internal.h"

#include <grpc/support/log.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PEM files are small; anything larger than this is not a certificate or key. */
#define MAX_PEM_BYTES (1u << 20)

static int read_pem(const char *path, const char *what, char **out, qv_status *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *err = qv_status_make(QV_ENOTFOUND, "cannot read TLS %s '%s': %s", what, path,
                              strerror(errno));
        return QV_ENOTFOUND;
    }
    char *buf = malloc(MAX_PEM_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        *err = qv_status_make(QV_ERESOURCE, "out of memory reading '%s'", path);
        return QV_ERESOURCE;
    }
    size_t n = fread(buf, 1, MAX_PEM_BYTES + 1, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || n > MAX_PEM_BYTES) {
        free(buf);
        *err = qv_status_make(QV_EINVAL, "TLS %s '%s' is unreadable or larger than %u bytes", what,
                              path, MAX_PEM_BYTES);
        return QV_EINVAL;
    }
    buf[n] = '\0';
    if (strstr(buf, "-----BEGIN ") == NULL) {
        free(buf);
        *err = qv_status_make(QV_EINVAL, "TLS %s '%s' holds no PEM block", what, path);
        return QV_EINVAL;
    }
    *out = buf;
    return 0;
}

/* Parses the certificate and key and checks that they belong together, so a mismatch is
 * reported at start-up with the file names rather than as a failed listen or handshake. */
static int check_pair(const qv_rpc_tls *t, const char *cert_path, const char *key_path,
                      qv_status *err)
{
    int rc = 0;
    BIO *cb = BIO_new_mem_buf(t->cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(t->key_pem, -1);
    X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (cert == NULL) {
        *err = qv_status_make(QV_EINVAL, "TLS certificate '%s' is not a PEM X.509 certificate",
                              cert_path);
        rc = QV_EINVAL;
    } else if (key == NULL) {
        *err = qv_status_make(
            QV_EINVAL, "TLS private key '%s' is not an unencrypted PEM private key", key_path);
        rc = QV_EINVAL;
    } else if (X509_check_private_key(cert, key) != 1) {
        *err = qv_status_make(QV_EINVAL, "TLS private key '%s' does not match certificate '%s'",
                              key_path, cert_path);
        rc = QV_EINVAL;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

static void grpc_log_to_qv(gpr_log_func_args *a)
{
    qv_log_level lvl = a->severity == GPR_LOG_SEVERITY_ERROR  ? QV_LOG_ERROR
                       : a->severity == GPR_LOG_SEVERITY_INFO ? QV_LOG_INFO
                                                              : QV_LOG_DEBUG;
    const char *file = strrchr(a->file, '/');
    qv_log(lvl, "grpc", "%s (%s:%d)", a->message, file ? file + 1 : a->file, a->line);
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void route_logs(void)
{
    gpr_set_log_function(grpc_log_to_qv);
}

void qv__rpc_route_grpc_logs(void)
{
    pthread_once(&log_once, route_logs);
}

int qv_rpc_tls_load(qv_rpc_tls *out, const char *cert_path, const char *key_path,
                    const char *ca_path, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    memset(out, 0, sizeof(*out));
    if ((cert_path == NULL) != (key_path == NULL)) {
        *err = qv_status_make(QV_EINVAL, "a TLS certificate needs its private key, and the "
                                         "other way round");
        return QV_EINVAL;
    }
    int rc;
    if (cert_path != NULL && (rc = read_pem(cert_path, "certificate", &out->cert_pem, err)) != 0)
        goto fail;
    if (key_path != NULL && (rc = read_pem(key_path, "private key", &out->key_pem, err)) != 0)
        goto fail;
    if (ca_path != NULL && (rc = read_pem(ca_path, "CA bundle", &out->ca_pem, err)) != 0)
        goto fail;
    if (out->cert_pem != NULL && (rc = check_pair(out, cert_path, key_path, err)) != 0)
        goto fail;
    return 0;
fail:
    qv_rpc_tls_free(out);
    return rc;
}

void qv_rpc_tls_free(qv_rpc_tls *tls)
{
    if (tls == NULL)
        return;
    free(tls->cert_pem);
    free(tls->key_pem);
    free(tls->ca_pem);
    free(tls->server_name);
    memset(tls, 0, sizeof(*tls));
}

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : QV_ERESOURCE;
}

int qv__rpc_tls_copy(qv_rpc_tls *dst, const qv_rpc_tls *src)
{
    memset(dst, 0, sizeof(*dst));
    if (dup_opt(&dst->cert_pem, src->cert_pem) || dup_opt(&dst->key_pem, src->key_pem) ||
        dup_opt(&dst->ca_pem, src->ca_pem) || dup_opt(&dst->server_name, src->server_name)) {
        qv_rpc_tls_free(dst);
        return QV_ERESOURCE;
    }
    dst->require_client_cert = src->require_client_cert;
    return 0;
}

grpc_server_credentials *qv__rpc_server_creds(const qv_rpc_tls *tls)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = tls->key_pem, .cert_chain = tls->cert_pem};
    grpc_ssl_client_certificate_request_type req =
        tls->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    return grpc_ssl_server_credentials_create_ex(tls->require_client_cert ? tls->ca_pem : NULL,
                                                 &pair, 1, req, NULL);
}

grpc_channel_credentials *qv__rpc_channel_creds(const qv_rpc_tls *tls)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = tls->key_pem, .cert_chain = tls->cert_pem};
    bool has_identity = tls->cert_pem != NULL && tls->key_pem != NULL;
    return grpc_ssl_credentials_create(tls->ca_pem, has_identity ? &pair : NULL, NULL, NULL);
}

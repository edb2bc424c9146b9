/*
 * Tests for TLS in common/rpc (creds.c and its use by server.c / client.c).
 *
 * The suite's init builds a throwaway PKI in memory with libcrypto (OpenSSL 3 API): a self-signed
 * CA, a server certificate for "localhost" (subjectAltName DNS:localhost, IP:127.0.0.1) and a
 * client certificate, both signed by the CA, plus a second, unrelated CA. Keys are EC P-256.
 * Everything is PEM text in heap strings, which is what qv_rpc_tls wants.
 */
#define _GNU_SOURCE
#include "rpc_fixture.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#define M_ECHO "/quiver.test.Echo/Echo"

typedef struct pki_ident {
    EVP_PKEY *key;
    X509 *cert;
    char *key_pem;
    char *cert_pem;
} pki_ident;

static pki_ident ca, server_id, client_id, other_ca;

/* ---- building the PKI ------------------------------------------------------------------------ */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(ext, "extension %d = %s", nid, value);
    cr_assert_eq(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

static char *bio_to_string(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    cr_assert(len > 0);
    char *s = malloc((size_t)len + 1);
    cr_assert_not_null(s);
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    return s;
}

/* A certificate for `cn` with a fresh key, signed by `issuer` (NULL: self-signed CA). `san` is an
 * OpenSSL subjectAltName value or NULL. */
static void make_ident(pki_ident *id, const char *cn, const pki_ident *issuer, const char *san,
                       const char *ext_usage, long serial)
{
    id->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cr_assert_not_null(id->key, "EC P-256 key generation failed");

    X509 *x = X509_new();
    cr_assert_not_null(x);
    cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    cr_assert_eq(X509_set_pubkey(x, id->key), 1);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Quiver tests", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *issuer_cert = issuer ? issuer->cert : x;
    cr_assert_eq(X509_set_issuer_name(x, X509_get_subject_name(issuer_cert)), 1);

    add_ext(x, issuer_cert, NID_subject_key_identifier, "hash");
    if (issuer == NULL) {
        add_ext(x, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer_cert, NID_authority_key_identifier, "keyid");
        add_ext(x, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, issuer_cert, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer_cert, NID_ext_key_usage, ext_usage);
    }
    if (san != NULL)
        add_ext(x, issuer_cert, NID_subject_alt_name, san);
    cr_assert(X509_sign(x, issuer ? issuer->key : id->key, EVP_sha256()) > 0, "X509_sign");
    id->cert = x;

    BIO *b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_X509(b, x), 1);
    id->cert_pem = bio_to_string(b);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    cr_assert_eq(PEM_write_bio_PrivateKey(b, id->key, NULL, NULL, 0, NULL, NULL), 1);
    id->key_pem = bio_to_string(b);
    BIO_free(b);
}

static void free_ident(pki_ident *id)
{
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
    free(id->key_pem);
    free(id->cert_pem);
    memset(id, 0, sizeof(*id));
}

static void pki_setup(void)
{
    make_ident(&ca, "Quiver test CA", NULL, NULL, NULL, 1);
    make_ident(&server_id, "localhost", &ca, "DNS:localhost,IP:127.0.0.1", "serverAuth", 2);
    make_ident(&client_id, "quiver-test-client", &ca, NULL, "clientAuth", 3);
    make_ident(&other_ca, "Some other CA", NULL, NULL, NULL, 4);

    /* Sanity: the chain verifies with libcrypto itself, so a TLS failure below is gRPC's. */
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca.cert);
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(vctx, store, server_id.cert, NULL);
    int ok = X509_verify_cert(vctx);
    cr_assert_eq(ok, 1, "server certificate does not verify: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
}

static void pki_teardown(void)
{
    free_ident(&ca);
    free_ident(&server_id);
    free_ident(&client_id);
    free_ident(&other_ca);
}

TestSuite(rpc_tls, .init = pki_setup, .fini = pki_teardown);

/* ---- helpers --------------------------------------------------------------------------------- */

static qv_rpc_server *tls_server(bool require_client_cert, char *target, size_t target_len)
{
    qv_rpc_tls tls = {
        .cert_pem = server_id.cert_pem,
        .key_pem = server_id.key_pem,
        .ca_pem = require_client_cert ? ca.cert_pem : NULL,
        .require_client_cert = require_client_cert,
    };
    qv_rpc_server_opts o;
    memset(&o, 0, sizeof(o));
    o.tls = &tls; /* copied by create: the local may go away */
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    return fx_server_start(o, m, 1, target, target_len);
}

/* One echo call with a 2 s timeout. Returns its code; on success checks the bytes. */
static int echo_once(qv_rpc_client *cli, const char *target, qv_status *err)
{
    static const char msg[] = "over TLS";
    qv_rpc_reply reply = {0};
    uint64_t t0 = qv_now_ms();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, msg, sizeof(msg), 2000, NULL, 0, &reply, err);
    uint64_t took = qv_now_ms() - t0;
    cr_expect(took < 3000, "a call with a 2 s timeout took %" PRIu64 " ms", took);
    if (rc == QV_OK) {
        cr_expect_eq(reply.len, sizeof(msg));
        cr_expect(reply.len == sizeof(msg) && memcmp(reply.data, msg, sizeof(msg)) == 0,
                  "echo over TLS differs");
    } else {
        cr_expect_null(reply.data);
    }
    qv_rpc_reply_free(&reply);
    return rc;
}

/* ---- a. round trip --------------------------------------------------------------------------- */

Test(rpc_tls, round_trip_over_tls)
{
    char target[FX_TARGET_MAX];
    qv_rpc_server *srv = tls_server(false, target, sizeof(target));

    /* By IP: the certificate's IP:127.0.0.1 subjectAltName must match. */
    qv_rpc_tls tls = {.ca_pem = ca.cert_pem};
    qv_rpc_client *cli = fx_client(&tls);
    qv_status err = qv_status_ok();
    int rc = echo_once(cli, target, &err);
    cr_expect_eq(rc, QV_OK, "TLS echo to %s: %d %s", target, rc, err.msg);
    qv_rpc_client_destroy(cli);

    /* By name: server_name overrides what is checked against the certificate. */
    qv_rpc_tls named = {.ca_pem = ca.cert_pem, .server_name = "localhost"};
    cli = fx_client(&named);
    rc = echo_once(cli, target, &err);
    cr_expect_eq(rc, QV_OK, "TLS echo with server_name localhost: %d %s", rc, err.msg);
    qv_rpc_client_destroy(cli);

    /* A name the certificate does not hold is refused. */
    qv_rpc_tls wrong = {.ca_pem = ca.cert_pem, .server_name = "db.example.com"};
    cli = fx_client(&wrong);
    rc = echo_once(cli, target, &err);
    cr_expect_neq(rc, QV_OK, "TLS accepted a certificate for another name");
    qv_rpc_client_destroy(cli);

    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- b. plaintext client to a TLS server ----------------------------------------------------- */

Test(rpc_tls, plaintext_client_to_tls_server_fails)
{
    char target[FX_TARGET_MAX];
    qv_rpc_server *srv = tls_server(false, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);
    qv_status err = qv_status_ok();
    int rc = echo_once(cli, target, &err);
    cr_expect_neq(rc, QV_OK, "a plaintext call to a TLS server succeeded");
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- c. untrusted CA ------------------------------------------------------------------------- */

Test(rpc_tls, client_trusting_another_ca_fails)
{
    char target[FX_TARGET_MAX];
    qv_rpc_server *srv = tls_server(false, target, sizeof(target));
    qv_rpc_tls tls = {.ca_pem = other_ca.cert_pem};
    qv_rpc_client *cli = fx_client(&tls);
    qv_status err = qv_status_ok();
    int rc = echo_once(cli, target, &err);
    cr_expect_neq(rc, QV_OK, "a server signed by an untrusted CA was accepted");
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- d. mutual TLS --------------------------------------------------------------------------- */

Test(rpc_tls, mutual_tls_requires_a_ca_signed_client_certificate)
{
    char target[FX_TARGET_MAX];
    qv_rpc_server *srv = tls_server(true, target, sizeof(target));
    qv_status err = qv_status_ok();

    qv_rpc_tls anon = {.ca_pem = ca.cert_pem};
    qv_rpc_client *cli = fx_client(&anon);
    int rc = echo_once(cli, target, &err);
    cr_expect_neq(rc, QV_OK, "mTLS server accepted a client without a certificate");
    qv_rpc_client_destroy(cli);

    /* A client certificate from another CA is refused too. */
    qv_rpc_tls stranger = {
        .ca_pem = ca.cert_pem, .cert_pem = other_ca.cert_pem, .key_pem = other_ca.key_pem};
    cli = fx_client(&stranger);
    rc = echo_once(cli, target, &err);
    cr_expect_neq(rc, QV_OK, "mTLS server accepted a certificate from an untrusted CA");
    qv_rpc_client_destroy(cli);

    qv_rpc_tls mine = {
        .ca_pem = ca.cert_pem, .cert_pem = client_id.cert_pem, .key_pem = client_id.key_pem};
    cli = fx_client(&mine);
    rc = echo_once(cli, target, &err);
    cr_expect_eq(rc, QV_OK, "mTLS with the CA-signed client certificate: %d %s", rc, err.msg);
    qv_rpc_client_destroy(cli);

    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- e. qv_rpc_tls_load ---------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *content, char *path,
                       size_t path_len)
{
    snprintf(path, path_len, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(content, 1, strlen(content), f), strlen(content));
    cr_assert_eq(fclose(f), 0);
}

Test(rpc_tls, tls_load_reads_pem_files_and_reports_errors)
{
    char dir[] = "/tmp/qv_test_tls_XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    char cert[256], key[256], cafile[256], junk[256], missing[256];
    write_file(dir, "server.crt", server_id.cert_pem, cert, sizeof(cert));
    write_file(dir, "server.key", server_id.key_pem, key, sizeof(key));
    write_file(dir, "ca.crt", ca.cert_pem, cafile, sizeof(cafile));
    write_file(dir, "junk.txt", "this is not a certificate\n", junk, sizeof(junk));
    snprintf(missing, sizeof(missing), "%s/missing.crt", dir);

    /* Everything present: the exact file contents come back. */
    qv_rpc_tls tls;
    qv_status err = qv_status_ok();
    int rc = qv_rpc_tls_load(&tls, cert, key, cafile, &err);
    cr_assert_eq(rc, QV_OK, "%d %s", rc, err.msg);
    cr_expect_str_eq(tls.cert_pem, server_id.cert_pem);
    cr_expect_str_eq(tls.key_pem, server_id.key_pem);
    cr_expect_str_eq(tls.ca_pem, ca.cert_pem);
    cr_expect(!tls.require_client_cert);
    cr_expect_null(tls.server_name);

    /* ... and they serve: a server built from the loaded files answers a TLS client. */
    qv_rpc_server_opts o;
    memset(&o, 0, sizeof(o));
    o.tls = &tls;
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_tls_free(&tls);
    cr_expect_null(tls.cert_pem);
    qv_rpc_tls ctls = {.ca_pem = ca.cert_pem};
    qv_rpc_client *cli = fx_client(&ctls);
    rc = echo_once(cli, target, &err);
    cr_expect_eq(rc, QV_OK, "server from loaded PEM files: %d %s", rc, err.msg);
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);

    /* Only a CA (what a client loads). */
    rc = qv_rpc_tls_load(&tls, NULL, NULL, cafile, &err);
    cr_expect_eq(rc, QV_OK, "%d %s", rc, err.msg);
    cr_expect_null(tls.cert_pem);
    cr_expect_null(tls.key_pem);
    cr_expect(tls.ca_pem != NULL && strcmp(tls.ca_pem, ca.cert_pem) == 0);
    qv_rpc_tls_free(&tls);

    /* A missing file: NOT_FOUND naming the path, nothing left allocated. */
    rc = qv_rpc_tls_load(&tls, cert, key, missing, &err);
    cr_expect_eq(rc, QV_ENOTFOUND, "missing CA file: %d %s", rc, err.msg);
    cr_expect_eq(err.code, QV_ENOTFOUND);
    cr_expect(strstr(err.msg, missing) != NULL, "message does not name %s: '%s'", missing, err.msg);
    cr_expect(tls.cert_pem == NULL && tls.key_pem == NULL && tls.ca_pem == NULL,
              "a failed load left strings behind");

    rc = qv_rpc_tls_load(&tls, missing, key, NULL, &err);
    cr_expect_eq(rc, QV_ENOTFOUND, "missing certificate: %d %s", rc, err.msg);
    cr_expect(strstr(err.msg, missing) != NULL, "message does not name %s: '%s'", missing, err.msg);

    /* A file without a PEM block. */
    rc = qv_rpc_tls_load(&tls, cert, junk, NULL, &err);
    cr_expect_eq(rc, QV_EINVAL, "key file without PEM: %d %s", rc, err.msg);
    cr_expect(strstr(err.msg, junk) != NULL, "message does not name %s: '%s'", junk, err.msg);
    cr_expect(tls.cert_pem == NULL && tls.key_pem == NULL, "a failed load left strings behind");

    /* A certificate without its key, and a key without its certificate. */
    rc = qv_rpc_tls_load(&tls, cert, NULL, cafile, &err);
    cr_expect_eq(rc, QV_EINVAL, "cert without key: %d %s", rc, err.msg);
    cr_expect_eq(err.code, QV_EINVAL);
    rc = qv_rpc_tls_load(&tls, NULL, key, NULL, &err);
    cr_expect_eq(rc, QV_EINVAL, "key without cert: %d %s", rc, err.msg);

    qv_rpc_tls_free(NULL);
    unlink(cert);
    unlink(key);
    unlink(cafile);
    unlink(junk);
    cr_expect_eq(rmdir(dir), 0, "rmdir %s: %s", dir, strerror(errno));
    fx_expect_no_leaks();
}

/* Error codes, qv_status, CRC-32C, randomness and clocks. */
#include "common/common.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

Test(status, codes_mirror_grpc_status_names)
{
    cr_assert_str_eq(qv_strerror(QV_OK), "OK");
    cr_assert_str_eq(qv_strerror(QV_EINVAL), "INVALID_ARGUMENT");
    cr_assert_str_eq(qv_strerror(QV_ERESOURCE), "RESOURCE_EXHAUSTED");
    cr_assert_str_eq(qv_strerror(QV_ECORRUPT), "DATA_LOSS");
    cr_assert_str_eq(qv_strerror(QV_EAUTH), "UNAUTHENTICATED");
    cr_assert_str_eq(qv_strerror(-99), "UNKNOWN");
}

Test(status, errno_maps_to_nearest_code)
{
    cr_assert_eq(qv_from_errno(ENOMEM), QV_ERESOURCE);
    cr_assert_eq(qv_from_errno(ENOENT), QV_ENOTFOUND);
    cr_assert_eq(qv_from_errno(EEXIST), QV_EEXIST);
    cr_assert_eq(qv_from_errno(EACCES), QV_EPERM);
    cr_assert_eq(qv_from_errno(0), QV_OK);
}

Test(status, make_formats_and_truncates_message)
{
    qv_status s = qv_status_make(QV_EINVAL, "dimension %d does not match %d", 3, 4);
    cr_assert_eq(s.code, QV_EINVAL);
    cr_assert_str_eq(s.msg, "dimension 3 does not match 4");
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    s = qv_status_make(QV_EINVAL, "%s", big);
    cr_assert_eq(strlen(s.msg), QV_STATUS_MSG_MAX - 1);
    qv_status ok = qv_status_ok();
    cr_assert(qv_status_is_ok(&ok));
    cr_assert_str_eq(ok.msg, "");
}

Test(hash, crc32c_matches_known_vectors)
{
    /* The standard check value of CRC-32C, and RFC 3720's 32 zero bytes. */
    cr_assert_eq(qv_crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0};
    cr_assert_eq(qv_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    uint8_t ones[32];
    memset(ones, 0xFF, sizeof(ones));
    cr_assert_eq(qv_crc32c(0, ones, sizeof(ones)), 0x62A8AB43u);
    cr_assert_eq(qv_crc32c(0, "", 0), 0u);
}

Test(hash, crc32c_chains_across_chunks)
{
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    uint32_t whole = qv_crc32c(0, buf, sizeof(buf));
    for (size_t cut = 0; cut <= sizeof(buf); cut += 37) {
        uint32_t part = qv_crc32c(qv_crc32c(0, buf, cut), buf + cut, sizeof(buf) - cut);
        cr_assert_eq(part, whole, "split at %zu", cut);
    }
    buf[500] ^= 1;
    cr_assert_neq(qv_crc32c(0, buf, sizeof(buf)), whole);
}

Test(hash, random_bytes_differ_between_calls)
{
    uint8_t a[32], b[32];
    cr_assert_eq(qv_random_bytes(a, sizeof(a)), 0);
    cr_assert_eq(qv_random_bytes(b, sizeof(b)), 0);
    cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
}

Test(time, monotonic_clock_advances_across_sleep)
{
    uint64_t t0 = qv_now_ns();
    qv_sleep_ms(20);
    uint64_t t1 = qv_now_ns();
    cr_assert_geq(t1 - t0, 20u * 1000000u);
    cr_assert_gt(qv_wall_ms(), 1600000000000ull); /* after 2020 */
}

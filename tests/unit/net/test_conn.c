/* rm_conn's half-close (proxy/net/conn.c): with an on_eof handler a peer's FIN is reported
 * after the bytes before it and the conn keeps writing; rm_conn_shutdown_write sends our FIN
 * once the queued bytes are out; without on_eof an EOF closes the conn as before. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/core/loop.h"
#include "proxy/net/conn.h"

struct state {
    struct rm_loop *loop;
    char got[64];
    size_t n;
    int eofs, closes, close_err;
    struct rm_timer stop;
};

static struct state *S;

static size_t on_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    if (S->n + n <= sizeof(S->got)) memcpy(S->got + S->n, p, n);
    S->n += n;
    return n;
}

static void on_eof(struct rm_conn *c)
{
    S->eofs++;
    rm_loop_stop(S->loop);
}

static void on_close(struct rm_conn *c, int err)
{
    S->closes++;
    S->close_err = err;
    rm_loop_stop(S->loop);
}

static void on_stop(struct rm_timer *t)
{
    rm_loop_stop(S->loop);
}

static const struct rm_conn_handler half = {
    .on_data = on_data, .on_close = on_close, .on_eof = on_eof};
static const struct rm_conn_handler full = {.on_data = on_data, .on_close = on_close};

/* Run the loop until a callback stops it, or <ms> pass. */
static void run(unsigned ms)
{
    rm_timer_start(S->loop, &S->stop, ms, on_stop);
    rm_loop_run(S->loop);
    rm_timer_stop(S->loop, &S->stop);
}

/* A conn over one end of a socketpair; the test talks through *peer. */
static struct rm_conn *pair(const struct rm_conn_handler *h, int *peer)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    struct sockaddr sa = {.sa_family = AF_UNIX};
    struct rm_conn *c = rm_conn_accepted(S->loop, sv[0], &sa, sizeof(sa), h, NULL);
    cr_assert_not_null(c);
    *peer = sv[1];
    return c;
}

Test(conn, half_close_reports_eof_and_keeps_writing)
{
    struct state st = {.loop = rm_loop_new()};
    S = &st;
    int peer;
    struct rm_conn *c = pair(&half, &peer);
    cr_assert_eq(write(peer, "abc", 3), 3);
    shutdown(peer, SHUT_WR);
    run(2000);
    cr_assert_eq(st.eofs, 1);
    cr_assert_eq(st.closes, 0);
    cr_assert_eq(st.n, 3);
    cr_assert(memcmp(st.got, "abc", 3) == 0);
    /* the other direction goes on, then ends with our FIN */
    rm_conn_write(c, "xyz", 3);
    rm_conn_shutdown_write(c);
    run(100);
    cr_assert_eq(st.closes, 0, "a half-closed conn closed itself");
    char b[8];
    cr_assert_eq(read(peer, b, sizeof(b)), 3);
    cr_assert(memcmp(b, "xyz", 3) == 0);
    cr_assert_eq(read(peer, b, sizeof(b)), 0, "no FIN after the queued bytes");
    rm_conn_close(c);
    rm_loop_run_pending(st.loop);
    close(peer);
    rm_loop_free(st.loop);
}

Test(conn, without_on_eof_an_eof_closes)
{
    struct state st = {.loop = rm_loop_new()};
    S = &st;
    int peer;
    pair(&full, &peer);
    cr_assert_eq(write(peer, "abc", 3), 3);
    shutdown(peer, SHUT_WR);
    run(2000);
    cr_assert_eq(st.closes, 1);
    cr_assert_eq(st.close_err, 0);
    cr_assert_eq(st.n, 3);
    rm_loop_run_pending(st.loop); /* the conn frees itself */
    close(peer);
    rm_loop_free(st.loop);
}

/* Both directions shut (our FIN sent, the peer's received: EPOLLHUP) while reading is paused
 * with bytes still unread: nothing is lost — the bytes and then the EOF come once reading
 * resumes (a tcp_proxy whose slow client paused the upstream used to drop them as a reset). */
Test(conn, hup_while_paused_keeps_the_unread_bytes)
{
    struct state st = {.loop = rm_loop_new()};
    S = &st;
    int peer;
    struct rm_conn *c = pair(&half, &peer);
    rm_conn_pause_reading(c, true);
    rm_conn_shutdown_write(c);
    run(100);
    char b[8];
    cr_assert_eq(read(peer, b, sizeof(b)), 0, "our FIN went out");
    cr_assert_eq(write(peer, "abc", 3), 3);
    shutdown(peer, SHUT_WR);
    run(200);
    cr_assert_eq(st.closes, 0, "closed (err %d) with unread bytes", st.close_err);
    cr_assert_eq(st.n, 0);
    rm_conn_pause_reading(c, false);
    run(2000);
    cr_assert_eq(st.n, 3);
    cr_assert(memcmp(st.got, "abc", 3) == 0);
    cr_assert_eq(st.eofs, 1);
    rm_conn_close(c);
    rm_loop_run_pending(st.loop);
    close(peer);
    rm_loop_free(st.loop);
}

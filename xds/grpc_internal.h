/* gRPC client internals, shared by grpc_channel.c (connections, keepalive, dispatch, channel
 * lifetime) and grpc_call.c (calls: state machine, stream events, sending).  Users include
 * xds/grpc.h only; tests may include this header.
 *
 * ## Objects
 * struct rm_grpc_channel owns a list of every call not yet freed (in start order) and a list
 * of live connections (struct rm_grpc_conn).  ch->cur is the connection new calls go to
 * (CONNECTING or READY); older ones are DRAINING (GOAWAY received) until their last call ends.
 * A call is WAITING (on the channel, no stream yet) or ACTIVE (a stream on call->gc), then
 * FINISHED (status known, on_close owed) and CLOSED, or CANCELLED.
 *
 * ## Deferred work and frees
 * User callbacks run only from: a stream event (on_message, on_writable), the call's task
 * (on_close, an owed on_writable) and rm_grpc_channel_free (on_close).  Everything else —
 * connecting, dispatching waiting calls, ending calls — never calls the user synchronously:
 * call_finish() records the status and queues the call's task.  A call is freed only by its
 * own task, once terminal, not queued again and not inside a callback; a connection only by
 * its free task, once DEAD.  rm_grpc_channel_free() orphans both (->ch = NULL) so that their
 * tasks never touch the freed channel. */
#ifndef RM_XDS_GRPC_INTERNAL_H
#define RM_XDS_GRPC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "proxy/http/codec.h"
#include "proxy/upstream/host.h"
#include "xds/grpc.h"

#define RM_GRPC_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define RM_GRPC_DEFAULT_KEEPALIVE_TIMEOUT_MS 20000
#define RM_GRPC_DEFAULT_CALL_BUFFER (256 * 1024)

/* Call states; only rm_grpc_call_set_state() changes them (it asserts the transition):
 *   WAITING  -> ACTIVE | FINISHED | CANCELLED
 *   ACTIVE   -> FINISHED | CANCELLED
 *   FINISHED -> CLOSED | CANCELLED
 *   CLOSED, CANCELLED: terminal; the call's task frees the call. */
enum rm_grpc_call_state {
    RM_GRPC_CALL_WAITING = 0, /* on the channel, no stream yet (connecting / no free slot) */
    RM_GRPC_CALL_ACTIVE,      /* request headers submitted on a stream of ->gc */
    RM_GRPC_CALL_FINISHED,    /* status known, stream released; on_close owed (task) */
    RM_GRPC_CALL_CLOSED,      /* on_close delivered */
    RM_GRPC_CALL_CANCELLED,   /* rm_grpc_call_cancel(): no more callbacks */
};

/* Connection states; only conn_set_state() in grpc_channel.c changes them (asserting):
 *   CONNECTING -> READY | DEAD;  READY -> DRAINING | DEAD;  DRAINING -> DEAD. */
enum rm_grpc_conn_state {
    RM_GRPC_CONN_CONNECTING = 0,
    RM_GRPC_CONN_READY,    /* HTTP/2 up: calls may open streams */
    RM_GRPC_CONN_DRAINING, /* GOAWAY received: calls in flight finish, no new ones */
    RM_GRPC_CONN_DEAD,     /* over; freed by its task */
};

struct rm_grpc_conn {
    struct rm_grpc_channel *ch; /* NULL once the channel is freed */
    struct rm_loop *loop;
    struct rm_grpc_conn *next; /* ch->conns while not DEAD */
    enum rm_grpc_conn_state state;
    struct rm_conn *tcp;    /* while CONNECTING */
    struct rm_codec *codec; /* HTTP/2 client codec from READY until closed or gone */
    unsigned ncalls;        /* ACTIVE calls on it */
    struct rm_timer ka;     /* keepalive: the next PING, or the ACK deadline */
    struct rm_timer retry;  /* waiting calls: a released stream is about to free a slot */
    bool ka_wait_ack;       /* a keepalive PING is out */
    struct rm_task free_task;
};

struct rm_grpc_channel {
    struct rm_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char target[RM_SOCKADDR_STRLEN]; /* "ip:port", or a unix socket's path */
    char *authority;
    struct rm_grpc_channel_opts o; /* defaults filled in */
    struct rm_codec_settings st;
    struct rm_grpc_conn *cur;                /* where new calls go (CONNECTING or READY), or NULL */
    struct rm_grpc_conn *conns;              /* every connection not DEAD */
    struct rm_grpc_call *calls, *calls_tail; /* every call not yet freed, in start order */
    struct rm_grpc_channel_stats stats;
    uint8_t *scratch; /* rm_grpc_call_send_pb packing */
    size_t scratch_cap;
    bool freeing;
    bool dispatching, redispatch;
};

struct rm_grpc_call {
    struct rm_grpc_channel *ch; /* NULL once orphaned by rm_grpc_channel_free */
    struct rm_loop *loop;
    struct rm_grpc_call *prev, *next; /* ch->calls */
    enum rm_grpc_call_state state;
    struct rm_grpc_conn *gc; /* ACTIVE: the connection of ->s */
    struct rm_stream *s;     /* ACTIVE: the stream (NULL after a connection loss) */
    const struct rm_grpc_call_cb *cb;
    void *ctx;
    struct rm_arena arena; /* path, metadata, response header blocks, status message */
    const char *path;
    struct rm_headers md; /* the caller's metadata (copied) */
    uint64_t deadline_at; /* loop ms; 0: none */
    struct rm_timer deadline;
    struct rm_buf early; /* framed messages sent while WAITING */
    struct rm_grpc_deframer rx;
    struct rm_task task;   /* on_close, owed on_writable, free */
    unsigned in_cb;        /* inside a user callback */
    int http_status;       /* :status of the response headers; 0 before them */
    int status;            /* final status (FINISHED and later) */
    const char *message;   /* final message (arena) */
    bool half_closed : 1;  /* rm_grpc_call_half_close() called */
    bool blocked : 1;      /* write_blocked() was true: on_writable owed when it drains */
    bool headers_seen : 1; /* final (non-1xx) response headers received */
    bool grpc_ct : 1;      /* their content-type is application/grpc */
    bool conn_lost : 1;    /* the stream ended with its connection (on_close follows) */
};

/* ---- grpc_call.c ---- */
void rm_grpc_call_set_state(struct rm_grpc_call *c, enum rm_grpc_call_state to);
/** Open a stream on <gc> (READY) for a WAITING call and send headers and what was queued.
 *  Returns 0 (ACTIVE, or FINISHED if the codec refused the headers), or -1 when the
 *  connection has no stream slot now (the call stays WAITING). */
int rm_grpc_call_activate(struct rm_grpc_call *c, struct rm_grpc_conn *gc);
/** End the call with <status> and a printf-style message: stream released, deadline stopped,
 *  on_close queued.  No-op once FINISHED or later.  Never calls the user. */
void rm_grpc_call_finish(struct rm_grpc_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Deliver on_close now (FINISHED -> CLOSED).  rm_grpc_channel_free() only. */
void rm_grpc_call_deliver_close(struct rm_grpc_call *c);
/** Queue the call's task (it frees a terminal call). */
void rm_grpc_call_schedule(struct rm_grpc_call *c);

/* ---- grpc_channel.c ---- */
/** Give WAITING calls streams (connecting first if needed).  Never calls the user. */
void rm_grpc_channel_dispatch(struct rm_grpc_channel *ch);
/** An ACTIVE call left <gc>: close a drained connection, stop keepalive, serve waiting calls. */
void rm_grpc_conn_call_left(struct rm_grpc_conn *gc);
/** A call became ACTIVE on <gc>: keepalive may start. */
void rm_grpc_conn_call_joined(struct rm_grpc_conn *gc);

#endif

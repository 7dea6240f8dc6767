/* SPDX-License-Identifier: MIT */
/*
 * bench/nats-relay — a JetStream relay (stream -> stream through one
 * server), as a sluice pipeline and as a plain loop with the C client
 * alone, the same guarantees in both: a batch's messages acknowledged
 * once its copies are stored.
 *
 *   nats-relay URL sluice|plain COUNT SIZE
 *
 * Publishes COUNT messages of SIZE bytes to a fresh input stream (not
 * timed), relays them to a fresh output stream (timed) and prints
 * "<mode> msgs/s MB/s".
 */
#include <sluice.h>
#include <sluice/nats.h>

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int die(const char *what, natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  fprintf(stderr, "nats-relay: %s: %s\n", what,
          t && *t ? t : natsStatus_GetText(s));
  return 1;
}

static natsStatus add_stream(jsCtx *js, const char *name, const char *subj) {
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = name;
  sc.Subjects = &subj;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  return js_AddStream(NULL, js, &sc, NULL, NULL);
}

static int plain(jsCtx *js, const char *in, const char *subj,
                 const char *out_subj, long count) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = in;
  so.Config.AckPolicy = js_AckExplicit;
  natsSubscription *sub = NULL;
  natsStatus s = js_PullSubscribe(&sub, js, subj, "plain", NULL, &so, NULL);
  if (s != NATS_OK)
    return die("subscribe", s);
  long got = 0;
  while (got < count && s == NATS_OK) {
    natsMsgList list = {0};
    s = natsSubscription_Fetch(&list, sub, 256, 1000, NULL);
    if (s == NATS_TIMEOUT) {
      s = NATS_OK;
      continue;
    }
    for (int i = 0; s == NATS_OK && i < list.Count; i++)
      s = js_PublishAsync(js, out_subj, natsMsg_GetData(list.Msgs[i]),
                          natsMsg_GetDataLength(list.Msgs[i]), NULL);
    if (s == NATS_OK)
      s = js_PublishAsyncComplete(js, NULL);
    for (int i = 0; s == NATS_OK && i < list.Count; i++)
      natsMsg_Ack(list.Msgs[i], NULL);
    got += list.Count;
    natsMsgList_Destroy(&list);
  }
  natsSubscription_Destroy(sub);
  return s == NATS_OK ? 0 : die("relay", s);
}

static int relay(const char *url, const char *in, const char *out,
                 const char *out_subj, long count) {
  sl_nats_source_opts so = {.conn.url = url,
                            .stream = in,
                            .consumer = "relay",
                            .max_msgs = (uint64_t)count};
  sl_nats_sink_opts ko = {.conn.url = url, .stream = out, .subject = out_subj};
  sl_stage *src = NULL, *sink = NULL;
  sl_pipeline *p = NULL;
  int rc = sl_nats_source_new(&src, &so);
  if (rc == 0)
    rc = sl_nats_sink_new(&sink, &ko);
  if (rc == 0)
    rc = sl_pipeline_new(&p, NULL);
  if (rc == 0)
    rc = sl_pipeline_chain(p, src, sink, NULL);
  if (rc == 0)
    rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc)
    fprintf(stderr, "nats-relay: %s\n",
            p && sl_pipeline_error(p) ? sl_pipeline_error(p) : sl_strerror(rc));
  if (!p) {
    sl_stage_free(src);
    sl_stage_free(sink);
  }
  sl_pipeline_free(p);
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: nats-relay URL sluice|plain COUNT SIZE\n");
    return 2;
  }
  const char *url = argv[1], *mode = argv[2];
  long count = atol(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  char in[64], out[64], in_subj[64], out_subj[64];
  snprintf(in, sizeof in, "IN_%s", mode);
  snprintf(out, sizeof out, "OUT_%s", mode);
  snprintf(in_subj, sizeof in_subj, "in.%s", mode);
  snprintf(out_subj, sizeof out_subj, "out.%s", mode);

  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsStatus s = natsConnection_ConnectTo(&nc, url);
  if (s == NATS_OK)
    s = natsConnection_JetStream(&js, nc, NULL);
  if (s == NATS_OK)
    s = add_stream(js, in, in_subj);
  if (s == NATS_OK)
    s = add_stream(js, out, out_subj);
  if (s != NATS_OK)
    return die(url, s);
  char *msg = malloc(size);
  for (size_t i = 0; i < size; i++)
    msg[i] = (char)('a' + i % 26);
  for (long i = 0; s == NATS_OK && i < count; i++)
    s = js_PublishAsync(js, in_subj, msg, (int)size, NULL);
  if (s == NATS_OK)
    s = js_PublishAsyncComplete(js, NULL);
  free(msg);
  if (s != NATS_OK)
    return die("fill", s);

  double t0 = now();
  int rc = strcmp(mode, "plain") == 0 ? plain(js, in, in_subj, out_subj, count)
                                      : relay(url, in, out, out_subj, count);
  double dt = now() - t0;
  if (rc == 0)
    printf("%s %.0f %.2f\n", mode, (double)count / dt,
           (double)count * (double)size / dt / 1e6);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rc;
}

/*
 * ops.h (internal): what every op file shares.
 *
 * Dimension letters, used in every comment and kernel signature (llm.c):
 *   B batch, T tokens (queries), S keys (kv positions), C channels, V vocab, L layers,
 *   H query heads, KV kv heads, D head dim, N rows (leading dims flattened), R rank,
 *   E experts, F feed-forward hidden size, P patch size.
 *
 * The life of an op (see any ops-*.c):
 *   1. check inputs (NULL in, NULL out; shapes from files are errors, not asserts),
 *   2. make inputs contiguous (op_cont) where the kernel needs it,
 *   3. n = op_begin(g, LV_OP_X); allocate n->out (and n->saved) in the arena; set params,
 *   4. return op_run(g, n): runs the forward on the graph's backend (or the CPU if the
 *      backend does not support it) and keeps the node on the tape when the graph records
 *      and some input needs a gradient.
 */
#ifndef LV_CORE_OPS_H
#define LV_CORE_OPS_H

#include "core/graph.h"

/* The next tape slot, cleared; NULL when out of memory. Not kept unless op_run keeps it. */
lv_node *op_begin(lv_graph *g, enum lv_op op);
/* Run the node's forward; record it if needed. Returns node->out, or NULL on error. */
lv_tensor *op_run(lv_graph *g, lv_node *n);
/* The same for n nodes built apart from the tape (as op_begin would have made them, their
 * outputs allocated), run as one group where the backend takes them (forward_n), else one
 * by one; each is then kept as op_run keeps a node. out[i]: node i's output. LV_OK, or
 * LV_ERR with the message set. */
int op_run_n(lv_graph *g, lv_node *const *nodes, int n, lv_tensor **out);
/* x if contiguous (any dtype), else a contiguous F32 copy recorded as LV_OP_CONT. */
lv_tensor *op_cont(lv_graph *g, lv_tensor *x);
/* A shape message for errors: "(2, 3)". Uses a rotating static buffer per thread. */
const char *op_shape(const lv_tensor *t);
/* Rows of a tensor: the product of every dim but the last. */
int64_t op_rows(const lv_tensor *t);

#endif /* LV_CORE_OPS_H */

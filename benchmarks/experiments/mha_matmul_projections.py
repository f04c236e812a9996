"""Experiment for `clip_train_step.py` (`--backends torch@THIS_FILE`): Keras'
`MultiHeadAttention` computes self-attention's projections as matmuls
instead of einsums.

keras-hub's CLIP encoder layers use `keras.layers.MultiHeadAttention`, whose
query, key, value and output projections are `EinsumDense` layers
(`abc,cde->abde` and `abcd,cde->abe`). On torch an einsum runs as batched
matmuls with permuted copies (`bmm` was 21% of the small config's kernel
time in a 2026-12-01 profile, where transformers runs one `mm` per
`Linear`). This variant keeps the layer's variables as they are and, for
self-attention (query, key and value the same tensor, no Keras masks, no
gate, no attention scores returned), flattens the batch and time axes and
runs one `(B*T, C) x (C, 3*H*D)` matmul for query, key and value together
and one `(B*T, H*D) x (H*D, C)` matmul for the output. Anything else goes to
Keras' own `call`. The numbers are the same up to float32 rounding.
"""

import keras
from keras import ops
from keras.src.backend import get_keras_mask

_call = keras.layers.MultiHeadAttention.call


def _projections_as_matmuls(
    self,
    query,
    value,
    key=None,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    return_attention_scores=False,
    training=None,
    use_causal_mask=False,
):
    key = value if key is None else key
    plain = (
        query is value
        and key is value
        and len(query.shape) == 3
        and query_mask is None
        and value_mask is None
        and key_mask is None
        and attention_mask is None
        and not return_attention_scores
        and not self._use_gate
        and self._sliding_window is None
        and self._dropout == 0.0
        and self._query_dense.bias is not None
        and get_keras_mask(query) is None
    )
    if not plain:
        return _call(
            self,
            query,
            value,
            key=key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
        )
    width = query.shape[-1]
    heads, head_dim = self._num_heads, self._key_dim
    inner = heads * head_dim
    denses = (self._query_dense, self._key_dense, self._value_dense)
    kernel = ops.concatenate(
        [ops.reshape(d.kernel, (width, inner)) for d in denses], axis=1
    )
    bias = ops.concatenate([ops.reshape(d.bias, (inner,)) for d in denses])
    shape = ops.shape(query)
    flat = ops.reshape(query, (-1, width))
    qkv = ops.add(ops.matmul(flat, kernel), bias)
    q, k, v = (
        ops.reshape(part, (shape[0], shape[1], heads, head_dim))
        for part in ops.split(qkv, 3, axis=-1)
    )
    out = ops.dot_product_attention(
        q,
        k,
        v,
        scale=self._inverse_sqrt_key_dim,
        is_causal=bool(use_causal_mask),
    )
    out = ops.reshape(out, (-1, inner))
    output = self._output_dense
    out = ops.matmul(out, ops.reshape(output.kernel, (inner, width)))
    if output.bias is not None:
        out = ops.add(out, output.bias)
    return ops.reshape(out, (shape[0], shape[1], width))


keras.layers.MultiHeadAttention.call = _projections_as_matmuls

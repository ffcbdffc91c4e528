defmodule GuildKit.MemoryEstimator.Estimate do
  @moduledoc """
  The size of a term, as returned by `GuildKit.MemoryEstimator`.

    * `:words` - heap words, as `:erts_debug.flat_size/1` counts them on a 64-bit
      emulator: everything the term holds on the process heap, shared subterms
      counted once per occurrence, without the one word that holds the term itself.
    * `:bytes` - `words` times the word size (8).
    * `:off_heap_binary_bytes` - bytes of binary data the term references off the
      process heap (refcounted binaries and sub-binaries of them), counted once per
      occurrence. `flat_size` leaves these out, and they often dominate a real state.
    * `:exact?` - `true` when every subterm was visited and every large map's trie was
      counted from its keys' hashes, and the size model holds on this VM (see
      "Supported releases" in `GuildKit.MemoryEstimator`); `false` otherwise.
    * `:sampled` - how many subterms were visited.
    * `:total` - how many subterms the term has (estimated when sampled): the term
      itself, every element, key, value, improper tail and captured variable. A list's
      cons cells are not counted separately from its elements.

  When `exact?` is `true`, `sampled` equals `total`.
  """

  @enforce_keys [:words, :bytes, :off_heap_binary_bytes, :exact?, :sampled, :total]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          words: non_neg_integer(),
          bytes: non_neg_integer(),
          off_heap_binary_bytes: non_neg_integer(),
          exact?: boolean(),
          sampled: non_neg_integer(),
          total: non_neg_integer()
        }
end

defmodule GuildKit.Describe do
  # How GuildKit's error messages show the terms they were given: `inspect/2`, except
  # that an integer too large to print quickly is described by its size. Printing an
  # integer of millions of bits in base 10 takes seconds in one call that does not
  # yield, so an ArgumentError about a hostile bignum would hold a scheduler that long.
  @moduledoc false

  import Bitwise

  @printable_bits 4096

  @doc false
  @spec describe(term(), keyword()) :: String.t()
  def describe(term, opts \\ []), do: inspect(term, [inspect_fun: &describe_term/2] ++ opts)

  @doc false
  # `Keyword.validate!/2` with the same messages, built with `describe/2`: its own
  # messages inspect the whole option list, so one huge integer among the options would
  # hold the caller's scheduler while it is printed.
  @spec options!(term(), [atom() | {atom(), term()}]) :: keyword()
  def options!(opts, allowed) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "expected options to be a keyword list, got: #{describe(opts)}"
    end

    case Keyword.validate(opts, allowed) do
      {:ok, opts} ->
        opts

      {:error, invalid} ->
        keys =
          Enum.map(allowed, fn
            {key, _default} -> key
            key -> key
          end)

        case Enum.split_with(invalid, &(&1 in keys)) do
          {_duplicate, [_ | _] = unknown} ->
            raise ArgumentError,
                  "unknown keys #{describe(unknown)} in #{describe(opts)}, " <>
                    "the allowed keys are: #{describe(keys)}"

          {duplicate, []} ->
            raise ArgumentError, "duplicate keys #{describe(duplicate)} in #{describe(opts)}"
        end
    end
  end

  @doc false
  # What `from_binary/1` of every native structure raises for a term that is no dump;
  # `maker` names the function that makes one.
  @spec raise_not_a_dump(term(), String.t()) :: no_return()
  def raise_not_a_dump(other, maker) do
    raise ArgumentError,
          "expected a binary made by #{maker}, got: " <>
            describe(other, limit: 5, printable_limit: 64)
  end

  defp describe_term(integer, _opts)
       when is_integer(integer) and
              (integer > 1 <<< @printable_bits or integer < -(1 <<< @printable_bits)) do
    # The external format's size is read from the bignum's header: O(1).
    bits = (:erlang.external_size(integer) - 7) * 8
    sign = if integer < 0, do: "-", else: ""
    Inspect.Algebra.string("#{sign}<an integer of about #{bits} bits>")
  end

  defp describe_term(term, opts), do: Inspect.inspect(term, opts)
end

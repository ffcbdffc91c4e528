defmodule GuildKit.Describe do
  # How GuildKit's error messages show the terms they were given: `inspect/2`, except
  # that an integer too large to print quickly is described by its size. Printing an
  # integer of millions of bits in base 10 takes seconds in one call that does not
  # yield, so an ArgumentError about a hostile bignum would hold a scheduler that long.
  @moduledoc false

  import Bitwise

  @printable_bits 4096
  # Tuples and maps larger than this are shown by their first elements and their size.
  @printable_elements 4096
  @shown_elements 5

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

  # `inspect/2` turns a whole tuple into a list (`Tuple.to_list/1`) and a whole map into a
  # sorted list before its `:limit` applies; neither yields, so a tuple or map of
  # millions of elements would hold the scheduler for 100 ms or more. Only the first
  # elements are read, with `elem/2` or an iterator.
  defp describe_term(tuple, opts)
       when is_tuple(tuple) and tuple_size(tuple) > @printable_elements do
    shown = for i <- 1..@shown_elements, do: elem(tuple, i - 1)
    more = ", ... (#{tuple_size(tuple)} elements)}"
    Inspect.Algebra.container_doc("{", shown, more, opts, &Inspect.Algebra.to_doc/2)
  end

  defp describe_term(map, opts) when is_map(map) and map_size(map) > @printable_elements do
    shown = first_pairs(:maps.next(:maps.iterator(map)), @shown_elements)
    more = ", ... (#{map_size(map)} keys)}"

    Inspect.Algebra.container_doc("%{", shown, more, opts, fn {key, value}, opts ->
      Inspect.Algebra.concat([
        Inspect.Algebra.to_doc(key, opts),
        " => ",
        Inspect.Algebra.to_doc(value, opts)
      ])
    end)
  end

  defp describe_term(term, opts), do: Inspect.inspect(term, opts)

  defp first_pairs(:none, _left), do: []
  defp first_pairs(_next, 0), do: []

  defp first_pairs({key, value, iterator}, left),
    do: [{key, value} | first_pairs(:maps.next(iterator), left - 1)]
end

defmodule GuildKit.DocsTest do
  @moduledoc """
  Every public module of the `:guild_kit` application (lib/ and the example guild in
  examples/) has a moduledoc, and each of its public functions and macros a doc and a
  spec. A module that is not part of the API says so with `@moduledoc false`.

  The modules are found at run time, so modules added later are checked too. The
  `docs:` and `package:` entries of mix.exs are checked against the tree as well, since
  `mix docs` and `mix hex.build` cannot run here (they need hex).
  """
  use ExUnit.Case, async: true

  # Compiled into the application for tests only; not documented by `mix docs`.
  @test_only_paths ["test/support/"]

  test "every public module has a moduledoc, and every public function a doc and a spec" do
    offenders = Enum.flat_map(documented_modules(), &offenders/1)

    assert offenders == [],
           "#{length(offenders)} documentation gaps (document them, or hide what is internal " <>
             "with @moduledoc false / @doc false):\n\n" <> Enum.join(offenders, "\n")
  end

  test "the modules found include the public components" do
    found = documented_modules()

    for module <- [GuildKit, GuildKit.SortedSet, GuildKit.MemberList, GuildKit.Fanout] do
      assert module in found
    end

    refute GuildKit.Native in found
  end

  @tag :tmp_dir
  test "the checks catch each kind of gap, and only those", %{tmp_dir: tmp_dir} do
    samples =
      compile_samples(tmp_dir,
        each_kind: """
        @moduledoc "A sample."

        @doc "Fine."
        @spec fine(integer(), integer()) :: integer()
        def fine(a, b \\\\ 1), do: a + b

        def no_doc, do: :ok

        @doc "No spec."
        def no_spec(a), do: a

        @doc "  "
        @spec blank_doc() :: :ok
        def blank_doc, do: :ok

        @doc "A macro with a spec."
        @spec fine_macro(term()) :: Macro.t()
        defmacro fine_macro(a), do: a

        @doc "A macro without one."
        defmacro no_spec_macro(a), do: a

        @doc false
        def hidden, do: :ok
        """,
        no_moduledoc: "def f, do: :ok",
        documents_nothing: ~s{@moduledoc "Internal, really."\n@doc false\ndef f, do: :ok},
        hidden: "@moduledoc false\ndef f, do: :ok",
        struct: ~s{@moduledoc "A struct."\ndefstruct [:a]},
        type: ~s{@moduledoc "A type."\n@type t :: term()}
      )

    {module, gaps} = samples[:each_kind]

    assert Enum.sort(gaps) ==
             Enum.sort([
               "#{inspect(module)}.no_doc/0 has no @doc",
               "#{inspect(module)}.no_spec/1 has no @spec",
               "#{inspect(module)}.blank_doc/0 has an empty @doc",
               "#{inspect(module)}.no_spec_macro/1 (macro) has no @spec"
             ])

    {module, gaps} = samples[:no_moduledoc]

    assert gaps == [
             "#{inspect(module)} has no @moduledoc (write one, or @moduledoc false if internal)",
             "#{inspect(module)}.f/0 has no @doc"
           ]

    {module, gaps} = samples[:documents_nothing]
    assert [gap] = gaps
    assert gap =~ "#{inspect(module)} has a @moduledoc but no public"

    for name <- [:hidden, :struct, :type], do: assert({_, []} = samples[name])
  end

  describe "mix.exs" do
    test "docs: the extras exist, and every library module is in a group" do
      docs = Mix.Project.config()[:docs]

      for extra <- docs[:extras] do
        path = with {path, _options} <- extra, do: to_string(path)
        assert File.regular?(path), "docs extra #{path} does not exist"
      end

      groups = Enum.flat_map(docs[:groups_for_modules], &elem(&1, 1))
      library = Enum.filter(documented_modules(), &docs[:filter_modules].(&1, %{}))
      assert GuildKit.SortedSet in library
      refute GuildKit.Examples.Guild in library

      # GuildKit, the overview, heads the list on its own.
      ungrouped =
        for module <- library, module != GuildKit, not grouped?(module, groups), do: module

      assert ungrouped == [], "modules in no docs group: #{inspect(ungrouped)}"
    end

    test "package: licence, links, and the files a dependent needs to build GuildKit" do
      package = Mix.Project.config()[:package]
      assert package[:licenses] == ["MIT"]
      assert Map.has_key?(package[:links], "GitHub")

      files = package_files(package[:files])

      needed =
        ["mix.exs", "mix/compile.guild_kit_cargo.exs", "Cargo.toml", "Cargo.lock"] ++
          Path.wildcard("lib/**/*.ex") ++
          Path.wildcard("native/*/Cargo.toml") ++
          Path.wildcard("native/*/src/**/*") ++ declared_benches()

      missing = for file <- needed, File.regular?(file), file not in files, do: file
      assert missing == [], "the package leaves out #{inspect(missing)}"

      stray =
        for file <- files,
            String.starts_with?(file, ~w(target/ priv/ _build/ deps/ examples/ test/)),
            do: file

      assert stray == [], "the package takes build output or dev-only files: #{inspect(stray)}"
    end
  end

  defp grouped?(module, groups) do
    Enum.any?(groups, fn
      %Regex{} = pattern -> Regex.match?(pattern, inspect(module))
      other -> other == module
    end)
  end

  # The files of `package[:files]`, expanded as `mix hex.build` does: wildcards, and
  # directories with everything under them.
  defp package_files(entries) do
    for entry <- entries,
        path <- Path.wildcard(entry),
        file <- if(File.dir?(path), do: Path.wildcard(Path.join(path, "**")), else: [path]),
        File.regular?(file),
        uniq: true,
        do: file
  end

  # The bench sources that the crates' Cargo.toml files declare with [[bench]]: cargo
  # refuses a manifest whose declared bench is missing.
  defp declared_benches do
    for manifest <- Path.wildcard("native/*/Cargo.toml"),
        [_, name] <- Regex.scan(~r/\[\[bench\]\]\s*name\s*=\s*"([^"]+)"/, File.read!(manifest)),
        do: Path.join([Path.dirname(manifest), "benches", name <> ".rs"])
  end

  # The application's modules with docs that are not hidden, from lib/ and examples/.
  defp documented_modules do
    {:ok, modules} = :application.get_key(:guild_kit, :modules)

    modules
    |> Enum.reject(&test_only?/1)
    # A protocol implementation is documented by its protocol.
    |> Enum.reject(&(Code.ensure_loaded!(&1) && function_exported?(&1, :__impl__, 1)))
    |> Enum.filter(fn module ->
      case Code.fetch_docs(module) do
        {:docs_v1, _, _, _, :hidden, _, _} -> false
        _ -> true
      end
    end)
    |> Enum.sort()
  end

  defp test_only?(module) do
    source = module.module_info(:compile) |> Keyword.fetch!(:source) |> to_string()
    Enum.any?(@test_only_paths, &String.contains?(source, "/" <> &1))
  end

  defp offenders(module),
    do: offenders(module, Code.fetch_docs(module), Code.Typespec.fetch_specs(module))

  defp offenders(module, docs, specs) do
    case {docs, specs} do
      {{:docs_v1, _, _, _, :hidden, _, _}, _} ->
        []

      {{:docs_v1, _, _, _, moduledoc, _, docs}, {:ok, specs}} ->
        module_gaps(module, moduledoc, docs) ++ function_gaps(module, docs, specs)

      _ ->
        ["#{inspect(module)} has no docs or specs chunk: #{inspect({docs, specs})}"]
    end
  end

  defp module_gaps(module, moduledoc, docs) do
    cond do
      moduledoc == :none ->
        ["#{inspect(module)} has no @moduledoc (write one, or @moduledoc false if internal)"]

      blank?(moduledoc) ->
        ["#{inspect(module)} has an empty @moduledoc"]

      # A struct is API even when the module's functions are all callbacks (an exception,
      # say), and so is a Mix task, whose moduledoc is its help.
      not Enum.any?(docs, &public_entry?/1) and not struct?(docs) and
          not String.starts_with?(inspect(module), "Mix.Tasks.") ->
        [
          "#{inspect(module)} has a @moduledoc but no public function, macro, type or " <>
            "callback: mark it @moduledoc false if it is internal"
        ]

      true ->
        []
    end
  end

  defp function_gaps(module, docs, specs) do
    specced = MapSet.new(for {{name, arity}, _} <- specs, do: {name, arity})

    for {{kind, name, arity}, _anno, _signature, doc, metadata} <- docs,
        kind in [:function, :macro],
        doc != :hidden,
        gap = gap(kind, name, arity, doc, Map.get(metadata, :defaults, 0), specced),
        do: "#{inspect(module)}.#{name}/#{arity}#{if kind == :macro, do: " (macro)"} #{gap}"
  end

  defp gap(kind, name, arity, doc, defaults, specced) do
    cond do
      doc == :none -> "has no @doc"
      blank?(doc) -> "has an empty @doc"
      not specced?(kind, name, arity, defaults, specced) -> "has no @spec"
      true -> nil
    end
  end

  # A spec for any of the arities a definition with default arguments has will do. A
  # macro's spec is stored for its expansion function, MACRO-name, with one more
  # argument (the caller's env).
  defp specced?(kind, name, arity, defaults, specced) do
    Enum.any?((arity - defaults)..arity, fn arity ->
      case kind do
        :function -> {name, arity} in specced
        :macro -> {:"MACRO-#{name}", arity + 1} in specced
      end
    end)
  end

  defp struct?(docs), do: List.keymember?(docs, {:function, :__struct__, 0}, 0)

  defp public_entry?({{kind, _name, _arity}, _, _, doc, _})
       when kind in [:function, :macro, :type, :callback, :macrocallback],
       do: doc != :hidden

  defp public_entry?(_), do: false

  defp blank?(%{} = doc), do: Enum.all?(doc, fn {_language, text} -> String.trim(text) == "" end)
  defp blank?(_doc), do: false

  # Compiles a module for each `{name, body}` with elixirc, in another OS process (the
  # test VM's compiler options change while `mix test` loads test files, and docs and
  # debug info may be off then), and returns `%{name => {module, gaps}}`.
  defp compile_samples(dir, samples) do
    sources =
      for {name, body} <- samples do
        module = Module.concat([__MODULE__, Sample, Macro.camelize(Atom.to_string(name))])
        path = Path.join(dir, "#{name}.ex")
        File.write!(path, "defmodule #{inspect(module)} do\n#{body}\nend\n")
        {name, module, path}
      end

    ebin = Path.join(dir, "ebin")
    File.mkdir_p!(ebin)
    args = ["--ignore-module-conflict", "-o", ebin | for({_, _, path} <- sources, do: path)]
    {output, status} = System.cmd("elixirc", args, stderr_to_stdout: true)
    assert status == 0, output

    Map.new(sources, fn {name, module, _path} ->
      beam = Path.join(ebin, "#{module}.beam")
      specs = Code.Typespec.fetch_specs(File.read!(beam))
      {name, {module, offenders(module, Code.fetch_docs(beam), specs)}}
    end)
  end
end

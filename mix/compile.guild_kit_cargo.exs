defmodule Mix.Tasks.Compile.GuildKitCargo do
  @moduledoc """
  Builds GuildKit's NIF with cargo and installs it as `priv/native/libguild_kit_nif.so`.

  hex.pm is out of reach, so the Rustler Mix package cannot be used; this small
  compiler does its one job. It runs `cargo build --release` only when a Rust source,
  manifest or lock file is newer than the installed library, shows cargo's output as it
  comes, fails `mix compile` when cargo fails, and installs the library by writing a
  temporary file and renaming it, so a running VM never loads a half-written file.

  It lives outside `lib/` because Mix needs it before `lib/` is compiled; `mix.exs`
  loads it.
  """
  use Mix.Task.Compiler

  @crate "guild_kit_nif"

  @impl Mix.Task.Compiler
  def run(_args) do
    root = project_root()
    installed = installed_library(root)

    if stale?(root, installed) do
      build(root, installed)
    else
      {:noop, []}
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    File.rm_rf!(Path.join(project_root(), "priv/native"))
    :ok
  end

  @impl Mix.Task.Compiler
  def manifests, do: [installed_library(project_root())]

  defp project_root, do: Path.dirname(Mix.Project.project_file())

  defp installed_library(root), do: Path.join(root, "priv/native/lib#{@crate}.so")

  defp stale?(root, installed) do
    case File.stat(installed, time: :posix) do
      {:ok, %{mtime: built_at}} ->
        root
        |> rust_sources()
        |> Enum.any?(fn source -> File.stat!(source, time: :posix).mtime > built_at end)

      {:error, _} ->
        true
    end
  end

  defp rust_sources(root) do
    Path.wildcard(Path.join(root, "native/*/Cargo.toml")) ++
      Path.wildcard(Path.join(root, "native/*/src/**/*.rs")) ++
      Enum.filter([Path.join(root, "Cargo.toml"), Path.join(root, "Cargo.lock")], &File.exists?/1)
  end

  defp build(root, installed) do
    case cargo() do
      nil ->
        error(
          "cargo was not found on PATH or in ~/.cargo/bin; install Rust from https://rustup.rs"
        )

      cargo ->
        Mix.shell().info("Compiling #{@crate} (cargo build --release)")

        {_, status} =
          System.cmd(cargo, ["build", "--release", "--package", @crate],
            cd: root,
            stderr_to_stdout: true,
            into: IO.stream(:stdio, :line)
          )

        if status == 0 do
          install(built_library(root), installed)
        else
          error("cargo build failed (exit status #{status}); see its output above")
        end
    end
  end

  defp cargo do
    System.find_executable("cargo") ||
      Enum.find([Path.expand("~/.cargo/bin/cargo")], &File.exists?/1)
  end

  defp built_library(root) do
    target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")
    extension = if match?({:unix, :darwin}, :os.type()), do: "dylib", else: "so"
    Path.join([target_dir, "release", "lib#{@crate}.#{extension}"])
  end

  defp install(built, installed) do
    File.mkdir_p!(Path.dirname(installed))
    temporary = installed <> ".tmp#{System.unique_integer([:positive])}"
    File.cp!(built, temporary)
    File.rename!(temporary, installed)
    # `mix compile` links priv/ into _build before compilers run; on a fresh checkout
    # priv/ did not exist yet, so link it now.
    Mix.Project.build_structure()
    {:ok, []}
  end

  defp error(message) do
    Mix.shell().error(message)

    {:error,
     [
       %Mix.Task.Compiler.Diagnostic{
         compiler_name: "cargo",
         file: Path.join(project_root(), "Cargo.toml"),
         message: message,
         position: nil,
         severity: :error
       }
     ]}
  end
end

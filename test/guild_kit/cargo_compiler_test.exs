defmodule GuildKit.CargoCompilerTest do
  @moduledoc """
  The project's Mix compiler, on a copy of the project: a failing cargo build fails
  `mix compile` with cargo's error shown; a second `mix compile` rebuilds nothing; and
  `mix clean` removes the installed library. The copy shares this checkout's cargo
  target directory so that dependencies are not rebuilt.
  """
  use ExUnit.Case, async: false

  @moduletag :slow
  @moduletag :tmp_dir
  @moduletag timeout: 600_000

  test "builds, rebuilds only on change, fails with cargo's error, cleans", %{tmp_dir: tmp_dir} do
    root = Path.expand("../..", __DIR__)

    for entry <- ~w(mix.exs mix lib native Cargo.toml Cargo.lock) do
      File.cp_r!(Path.join(root, entry), Path.join(tmp_dir, entry))
    end

    atoms = Path.join(tmp_dir, "native/guild_kit_nif/src/atoms.rs")
    source = File.read!(atoms)
    File.write!(atoms, source <> "\nfn broken( {\n")

    {output, status} = mix(tmp_dir, root, ["compile"])
    assert status != 0
    assert output =~ "unclosed delimiter"
    assert output =~ "cargo build failed"
    refute File.exists?(Path.join(tmp_dir, "priv/native/libguild_kit_nif.so"))

    File.write!(atoms, source)
    {output, 0} = mix(tmp_dir, root, ["compile"])
    assert output =~ "Compiling guild_kit_nif"
    assert File.exists?(Path.join(tmp_dir, "priv/native/libguild_kit_nif.so"))

    {output, 0} = mix(tmp_dir, root, ["compile"])
    refute output =~ "Compiling guild_kit_nif"

    {_, 0} = mix(tmp_dir, root, ["clean"])
    refute File.exists?(Path.join(tmp_dir, "priv/native"))
  end

  defp mix(dir, root, args) do
    env = [
      {"MIX_ENV", "dev"},
      {"CARGO_TARGET_DIR", Path.join(root, "target")},
      {"MIX_EXS", nil},
      {"MIX_BUILD_PATH", nil}
    ]

    System.cmd("mix", args, cd: dir, env: env, stderr_to_stdout: true)
  end
end

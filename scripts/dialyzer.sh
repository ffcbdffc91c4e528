#!/bin/sh
# Runs Dialyzer (Debian's erlang-dialyzer: dialyxir needs hex) on what `mix compile`
# builds: lib/ and examples/.
#
# The PLT takes about half a minute to build on two cores, so it is cached under
# _build/dialyzer/ in a file named after the OTP, ERTS and Elixir versions and the
# list of applications in it: it is rebuilt only when it is missing or one of those
# changed.
set -eu
cd "$(dirname "$0")/.."

# Warnings beyond Dialyzer's defaults: results thrown away without a match, specs that
# promise a return the code never gives or leave out one it does, and calls to
# functions or types that neither the PLT nor the project defines.
FLAGS="-Wunmatched_returns -Wextra_return -Wmissing_return -Wunknown"

elixir_lib=$(elixir -e 'IO.write(Path.dirname(:code.lib_dir(:elixir)))')
apps="erts kernel stdlib $elixir_lib/elixir/ebin $elixir_lib/logger/ebin $elixir_lib/mix/ebin"
versions=$(elixir -e '
  otp_version = Path.join([:code.root_dir(), "releases", System.otp_release(), "OTP_VERSION"])
  IO.write("otp-#{String.trim(File.read!(otp_version))}-erts-#{:erlang.system_info(:version)}-elixir-#{System.version()}")
')
apps_sum=$(printf '%s' "$apps" | cksum | cut -d' ' -f1)
plt_dir=_build/dialyzer
plt="$plt_dir/$versions-apps-$apps_sum.plt"

if [ ! -f "$plt" ]; then
  echo "==> building the Dialyzer PLT $plt (once per OTP/Elixir version)"
  mkdir -p "$plt_dir"
  rm -f "$plt_dir"/*.plt "$plt_dir"/*.plt.tmp
  # Elixir's beams need its compiler on the code path (elixir_erl:debug_info). The PLT
  # is written to a temporary file, so an interrupted build leaves no broken PLT.
  # shellcheck disable=SC2086 # one word per application
  dialyzer -pa "$elixir_lib/elixir/ebin" --build_plt --output_plt "$plt.tmp" --apps $apps
  mv "$plt.tmp" "$plt"
fi

MIX_ENV=dev mix compile
# shellcheck disable=SC2086 # one word per flag
exec dialyzer -pa "$elixir_lib/elixir/ebin" --plt "$plt" $FLAGS _build/dev/lib/guild_kit/ebin

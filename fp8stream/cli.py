"""The command line: `fp8stream calibrate`, `check`, `inspect`, `verify`, `zoo`; one module per command."""

from __future__ import annotations

from fp8stream import interrupts

interrupts.install()  # before anything slow: a Ctrl-C during start-up ends in one line too

import click  # noqa: E402

from fp8stream.commands.calibrate import calibrate  # noqa: E402
from fp8stream.commands.check import check  # noqa: E402
from fp8stream.commands.common import EXIT_CODES, OneLineErrors  # noqa: E402
from fp8stream.commands.inspect import inspect  # noqa: E402
from fp8stream.commands.verify import verify  # noqa: E402
from fp8stream.commands.zoo import zoo  # noqa: E402
from fp8stream.io.heap import return_large_buffers_to_the_system  # noqa: E402
from fp8stream.methods.forward.diffusers_import import lean_for_this_process  # noqa: E402
from fp8stream.version import __version__  # noqa: E402


@click.group(cls=OneLineErrors, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fp8stream")
def main() -> None:
    """Give FP8 (float8_e4m3fn) checkpoints usable activation scales (input_scale),
    streaming one layer at a time with memory near one layer's size.

    Run `fp8stream COMMAND --help` for each command's options."""
    return_large_buffers_to_the_system()
    lean_for_this_process()  # diffusers here serves the forward pass alone


main.add_command(calibrate)
main.add_command(check)
main.add_command(inspect)
main.add_command(verify)
main.add_command(zoo)

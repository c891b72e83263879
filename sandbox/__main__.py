from selfdev.sandbox.cli import sandbox_cli

if __name__ == "__main__":
    sandbox_cli(prog_name="selfdev sandbox")

from cloudphone.cli.main import app

app(prog_name="cloudphone")

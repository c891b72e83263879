from selfdev.engine.cli import main

main()

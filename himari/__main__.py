from himari.cli.main import main

main()

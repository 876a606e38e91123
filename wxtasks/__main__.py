from wxtasks.cli import main

main()

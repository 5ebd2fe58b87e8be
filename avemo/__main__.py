from avemo.cli import main

main()

from vramc.cli import main

main()

from scenescribe.cli import main

main()

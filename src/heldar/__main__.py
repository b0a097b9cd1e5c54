from heldar.cli import main

main()

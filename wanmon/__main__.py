from wanmon.cli import main

main()

from istiobuild.cli import main

main()

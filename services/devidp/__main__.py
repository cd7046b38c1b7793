from services.devidp.server import main

main()

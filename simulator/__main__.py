from simulator.publish import main

main()

from fp8stream.cli import main

if __name__ == "__main__":
    main()

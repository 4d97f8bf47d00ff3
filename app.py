"""Start the phi-demo chat app: `python app.py --help` lists every flag."""

from phi_demo.server import main

if __name__ == "__main__":
    main()

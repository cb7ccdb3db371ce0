@"%LOCALAPPDATA%\Programs\fusion-host\fusion-host.exe" %*
